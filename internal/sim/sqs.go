package sim

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// awsJSON is the AWS JSON 1.0 protocol (SQS): the operation in X-Amz-Target
// ("AmazonSQS.SendMessage"), a JSON body, a JSON result; errors are
// {"__type": "com.amazonaws.sqs#Code", "message": …} with the legacy Query error
// code in the x-amzn-query-error header (SQS is "query compatible").
type awsJSON struct {
	prefix    string // "AmazonSQS."
	namespace string // "com.amazonaws.sqs#"
}

func (p awsJSON) readRequest(r *http.Request) (string, form, *apiError) {
	target := r.Header.Get("X-Amz-Target")
	if !strings.HasPrefix(target, p.prefix) {
		return "", form{}, &apiError{Status: 400, Code: "UnknownOperationException", Message: fmt.Sprintf("X-Amz-Target %q does not name an operation of this service", target)}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 2<<20))
	if err != nil {
		return "", form{}, &apiError{Status: 400, Code: "InvalidParameterValue", Message: "cannot read the request body: " + err.Error()}
	}
	return strings.TrimPrefix(target, p.prefix), form{body: body}, nil
}

func (awsJSON) writeResult(w http.ResponseWriter, _, requestID string, result any) {
	body, err := json.Marshal(result)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.Header().Set("x-amzn-RequestId", requestID)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

func (p awsJSON) writeError(w http.ResponseWriter, requestID string, e *apiError) {
	body, _ := json.Marshal(map[string]string{"__type": p.namespace + e.Code, "message": e.Message})
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.Header().Set("x-amzn-RequestId", requestID)
	if e.Query != "" {
		fault := "Sender"
		if e.Status >= 500 {
			fault = "Receiver"
		}
		w.Header().Set("x-amzn-query-error", e.Query+";"+fault)
	}
	w.WriteHeader(e.Status)
	_, _ = w.Write(body)
}

func (awsJSON) throttle() *apiError {
	return &apiError{Status: 400, Code: "RequestThrottled", Message: "Request is throttled."}
}

func (awsJSON) internal() *apiError {
	return &apiError{Status: 500, Code: "InternalFailure", Message: "The request processing has failed because of an unknown error, exception or failure."}
}

// SQS limits (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html).
const (
	sqsMaxBody          = 256 * 1024
	sqsMaxWait          = 20
	sqsMaxVisibility    = 43200
	sqsDefaultRetention = 4 * 24 * time.Hour
)

type sqsMessage struct {
	ID           string
	Body         string
	MD5          string
	SentAt       time.Time
	VisibleAt    time.Time // not deliverable before (delay or visibility timeout)
	ReceiveCount int
	FirstReceive time.Time
	Handles      map[string]bool // every receipt handle issued; the latest is valid for visibility changes
	Latest       string
	MovedFrom    string // source queue ARN when moved by redrive
}

type sqsQueue struct {
	Name, URL, ARN string
	Created        time.Time
	Attrs          map[string]string // as set (VisibilityTimeout, RedrivePolicy, …)
	Messages       []*sqsMessage     // in send order
	changed        chan struct{}     // closed and replaced when a message is added or becomes visible early
}

func (q *sqsQueue) intAttr(name string, def int) int {
	if v, ok := q.Attrs[name]; ok {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
	}
	return def
}

func (q *sqsQueue) notify() {
	close(q.changed)
	q.changed = make(chan struct{})
}

// redrive is a queue's RedrivePolicy attribute (a JSON string).
type redrive struct {
	DeadLetterTargetArn string `json:"deadLetterTargetArn"`
	MaxReceiveCount     any    `json:"maxReceiveCount"` // AWS accepts "5" and 5
}

func (r redrive) max() (int, bool) {
	switch v := r.MaxReceiveCount.(type) {
	case float64:
		return int(v), v >= 1 && v <= 1000
	case string:
		n, err := strconv.Atoi(v)
		return n, err == nil && n >= 1 && n <= 1000
	}
	return 0, false
}

func (s *Server) sqsOps() map[string]func(form) (any, *apiError) {
	return map[string]func(form) (any, *apiError){
		"CreateQueue":             s.sqsCreateQueue,
		"GetQueueUrl":             s.sqsGetQueueURL,
		"SendMessage":             s.sqsSendMessage,
		"ReceiveMessage":          s.sqsReceiveMessage,
		"DeleteMessage":           s.sqsDeleteMessage,
		"ChangeMessageVisibility": s.sqsChangeVisibility,
		"GetQueueAttributes":      s.sqsGetQueueAttributes,
	}
}

func sqsInvalid(format string, args ...any) *apiError {
	return &apiError{Status: 400, Code: "InvalidParameterValue", Query: "InvalidParameterValue", Message: fmt.Sprintf(format, args...)}
}

func noQueue() *apiError {
	return &apiError{Status: 400, Code: "QueueDoesNotExist", Query: "AWS.SimpleQueueService.NonExistentQueue", Message: "The specified queue does not exist."}
}

func decodeJSON(f form, v any) *apiError {
	if len(f.body) == 0 {
		return nil
	}
	if err := json.Unmarshal(f.body, v); err != nil {
		return &apiError{Status: 400, Code: "InvalidParameterValue", Query: "InvalidParameterValue", Message: "cannot read the request: " + err.Error()}
	}
	return nil
}

// queueByURLLocked finds a queue by its URL, tolerating another host (clients
// build URLs from their own endpoint): the path /<account>/<name> decides.
func (s *Server) queueByURLLocked(u string) (*sqsQueue, *apiError) {
	if u == "" {
		return nil, sqsInvalid("Value for parameter QueueUrl is invalid. Reason: empty.")
	}
	parts := strings.Split(strings.TrimRight(u, "/"), "/")
	if len(parts) < 2 || parts[len(parts)-2] != s.opts.AccountID {
		return nil, noQueue()
	}
	q := s.queues[parts[len(parts)-1]]
	if q == nil {
		return nil, noQueue()
	}
	return q, nil
}

func (s *Server) queueByARNLocked(arn string) *sqsQueue {
	for _, q := range s.queues {
		if q.ARN == arn {
			return q
		}
	}
	return nil
}

var sqsAttrNames = []string{"DelaySeconds", "MaximumMessageSize", "MessageRetentionPeriod", "ReceiveMessageWaitTimeSeconds", "RedrivePolicy", "VisibilityTimeout", "Policy", "RedriveAllowPolicy", "SqsManagedSseEnabled"}

func (s *Server) validQueueAttrsLocked(attrs map[string]string) *apiError {
	for k, v := range attrs {
		if !contains(sqsAttrNames, k) {
			return &apiError{Status: 400, Code: "InvalidAttributeName", Query: "InvalidAttributeName", Message: "Unknown Attribute " + k + "."}
		}
		bad := func() *apiError {
			return &apiError{Status: 400, Code: "InvalidAttributeValue", Query: "InvalidAttributeValue", Message: fmt.Sprintf("Invalid value for the parameter %s.", k)}
		}
		num := func(lo, hi int) *apiError {
			n, err := strconv.Atoi(v)
			if err != nil || n < lo || n > hi {
				return bad()
			}
			return nil
		}
		var err *apiError
		switch k {
		case "VisibilityTimeout":
			err = num(0, sqsMaxVisibility)
		case "ReceiveMessageWaitTimeSeconds":
			err = num(0, sqsMaxWait)
		case "DelaySeconds":
			err = num(0, 900)
		case "MessageRetentionPeriod":
			err = num(60, 1209600)
		case "RedrivePolicy":
			var rp redrive
			if json.Unmarshal([]byte(v), &rp) != nil {
				return bad()
			}
			if _, ok := rp.max(); !ok {
				return bad()
			}
			if s.queueByARNLocked(rp.DeadLetterTargetArn) == nil {
				return &apiError{Status: 400, Code: "InvalidParameterValue", Query: "InvalidParameterValue",
					Message: "Value " + v + " for parameter RedrivePolicy is invalid. Reason: Dead letter target does not exist."}
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) sqsCreateQueue(f form) (any, *apiError) {
	var in struct {
		QueueName  string
		Attributes map[string]string
	}
	if err := decodeJSON(f, &in); err != nil {
		return nil, err
	}
	if in.QueueName == "" || len(in.QueueName) > 80 || strings.TrimFunc(in.QueueName, func(r rune) bool {
		return r == '-' || r == '_' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
	}) != "" {
		return nil, sqsInvalid("Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length")
	}
	if strings.HasSuffix(in.QueueName, ".fifo") {
		return nil, sqsInvalid("FIFO queues are not simulated")
	}
	if err := s.validQueueAttrsLocked(in.Attributes); err != nil {
		return nil, err
	}
	if q := s.queues[in.QueueName]; q != nil {
		for k, v := range in.Attributes {
			if q.Attrs[k] != v {
				return nil, &apiError{Status: 400, Code: "QueueNameExists", Query: "QueueAlreadyExists",
					Message: "A queue already exists with the same name and a different value for attribute " + k}
			}
		}
		return map[string]string{"QueueUrl": q.URL}, nil
	}
	q := &sqsQueue{
		Name: in.QueueName, Created: s.clock.Now(), Attrs: map[string]string{}, changed: make(chan struct{}),
		ARN: fmt.Sprintf("arn:aws:sqs:%s:%s:%s", s.opts.Region, s.opts.AccountID, in.QueueName),
		URL: fmt.Sprintf("%s/%s/%s", s.queueHost(), s.opts.AccountID, in.QueueName),
	}
	for k, v := range in.Attributes {
		q.Attrs[k] = v
	}
	s.queues[q.Name] = q
	return map[string]string{"QueueUrl": q.URL}, nil
}

func (s *Server) queueHost() string {
	if s.listener != nil {
		return s.URL()
	}
	return fmt.Sprintf("https://sqs.%s.amazonaws.com", s.opts.Region)
}

func (s *Server) sqsGetQueueURL(f form) (any, *apiError) {
	var in struct {
		QueueName              string
		QueueOwnerAWSAccountID string `json:"QueueOwnerAWSAccountId"`
	}
	if err := decodeJSON(f, &in); err != nil {
		return nil, err
	}
	q := s.queues[in.QueueName]
	if q == nil || (in.QueueOwnerAWSAccountID != "" && in.QueueOwnerAWSAccountID != s.opts.AccountID) {
		return nil, noQueue()
	}
	return map[string]string{"QueueUrl": q.URL}, nil
}

func md5Hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// validBody: SQS accepts #x9 #xA #xD and #x20 to #xD7FF, #xE000 to #xFFFD, #x10000 to #x10FFFF.
func validBody(b string) bool {
	if !utf8.ValidString(b) {
		return false
	}
	for _, r := range b {
		switch {
		case r == 0x9 || r == 0xA || r == 0xD:
		case r >= 0x20 && r <= 0xD7FF, r >= 0xE000 && r <= 0xFFFD, r >= 0x10000 && r <= 0x10FFFF:
		default:
			return false
		}
	}
	return true
}

func (s *Server) sqsSendMessage(f form) (any, *apiError) {
	var in struct {
		QueueURL     string `json:"QueueUrl"`
		MessageBody  string
		DelaySeconds *int
	}
	if err := decodeJSON(f, &in); err != nil {
		return nil, err
	}
	q, err := s.queueByURLLocked(in.QueueURL)
	if err != nil {
		return nil, err
	}
	id, aerr := s.enqueueLocked(q, in.MessageBody, in.DelaySeconds)
	if aerr != nil {
		return nil, aerr
	}
	return map[string]string{"MessageId": id, "MD5OfMessageBody": md5Hex(in.MessageBody)}, nil
}

// enqueueLocked adds a message (SendMessage, and events the simulation emits).
func (s *Server) enqueueLocked(q *sqsQueue, body string, delay *int) (string, *apiError) {
	if len(body) == 0 {
		return "", &apiError{Status: 400, Code: "MissingParameter", Query: "MissingParameter", Message: "The request must contain the parameter MessageBody."}
	}
	if len(body) > q.intAttr("MaximumMessageSize", sqsMaxBody) {
		return "", sqsInvalid("One or more parameters are invalid. Reason: Message must be shorter than %d bytes.", q.intAttr("MaximumMessageSize", sqsMaxBody))
	}
	if !validBody(body) {
		return "", &apiError{Status: 400, Code: "InvalidMessageContents", Query: "InvalidMessageContents", Message: "Invalid characters found."}
	}
	d := q.intAttr("DelaySeconds", 0)
	if delay != nil {
		if *delay < 0 || *delay > 900 {
			return "", sqsInvalid("Value %d for parameter DelaySeconds is invalid. Reason: must be between 0 and 900, if provided.", *delay)
		}
		d = *delay
	}
	now := s.clock.Now()
	m := &sqsMessage{ID: s.uuidLocked(), Body: body, MD5: md5Hex(body), SentAt: now, VisibleAt: now.Add(time.Duration(d) * time.Second), Handles: map[string]bool{}}
	q.Messages = append(q.Messages, m)
	q.notify()
	return m.ID, nil
}

type xSQSMessage struct {
	MessageID     string `json:"MessageId"`
	ReceiptHandle string
	MD5OfBody     string
	Body          string
	Attributes    map[string]string `json:",omitempty"`
}

// longPoll is ReceiveMessage's answer when nothing is deliverable yet: ServeHTTP
// releases the lock and waits on the injected clock (or a new message) before
// asking again, up to WaitTimeSeconds.
type longPoll struct {
	queue    *sqsQueue
	deadline time.Time
	retry    func() (any, *apiError)
}

type receiveInput struct {
	QueueURL                    string `json:"QueueUrl"`
	MaxNumberOfMessages         *int
	VisibilityTimeout           *int
	WaitTimeSeconds             *int
	AttributeNames              []string
	MessageSystemAttributeNames []string
}

func (s *Server) sqsReceiveMessage(f form) (any, *apiError) {
	var in receiveInput
	if err := decodeJSON(f, &in); err != nil {
		return nil, err
	}
	q, err := s.queueByURLLocked(in.QueueURL)
	if err != nil {
		return nil, err
	}
	maxN := 1
	if in.MaxNumberOfMessages != nil {
		if maxN = *in.MaxNumberOfMessages; maxN < 1 || maxN > 10 {
			return nil, sqsInvalid("Value %d for parameter MaxNumberOfMessages is invalid. Reason: Must be between 1 and 10, if provided.", maxN)
		}
	}
	vis := q.intAttr("VisibilityTimeout", 30)
	if in.VisibilityTimeout != nil {
		if vis = *in.VisibilityTimeout; vis < 0 || vis > sqsMaxVisibility {
			return nil, sqsInvalid("Value %d for parameter VisibilityTimeout is invalid. Reason: Must be between 0 and 43200, if provided.", vis)
		}
	}
	wait := q.intAttr("ReceiveMessageWaitTimeSeconds", 0)
	if in.WaitTimeSeconds != nil {
		if wait = *in.WaitTimeSeconds; wait < 0 || wait > sqsMaxWait {
			return nil, sqsInvalid("Value %d for parameter WaitTimeSeconds is invalid. Reason: Must be >= 0 and <= 20, if provided.", wait)
		}
	}
	attrs := append(append([]string(nil), in.AttributeNames...), in.MessageSystemAttributeNames...)
	receive := func() (any, *apiError) {
		msgs := s.receiveLocked(q, maxN, vis, attrs)
		return map[string]any{"Messages": msgs}, nil
	}
	out, _ := receive()
	if len(out.(map[string]any)["Messages"].([]xSQSMessage)) > 0 || wait == 0 {
		return out, nil
	}
	return &longPoll{queue: q, deadline: s.clock.Now().Add(time.Duration(wait) * time.Second), retry: receive}, nil
}

// receiveLocked delivers up to n visible messages, moving those received more
// than the redrive policy's maxReceiveCount to the dead-letter queue instead.
func (s *Server) receiveLocked(q *sqsQueue, n, vis int, attrs []string) []xSQSMessage {
	now := s.clock.Now()
	s.expireLocked(q, now)
	var rp redrive
	maxRecv, dlq := 0, (*sqsQueue)(nil)
	if v, ok := q.Attrs["RedrivePolicy"]; ok && json.Unmarshal([]byte(v), &rp) == nil {
		maxRecv, _ = rp.max()
		dlq = s.queueByARNLocked(rp.DeadLetterTargetArn)
	}
	out := []xSQSMessage{}
	kept := q.Messages[:0]
	for _, m := range q.Messages {
		if len(out) == n || now.Before(m.VisibleAt) {
			kept = append(kept, m)
			continue
		}
		if dlq != nil && maxRecv > 0 && m.ReceiveCount >= maxRecv {
			// "When the ReceiveCount for a message exceeds the maxReceiveCount for a
			// queue, Amazon SQS moves the message to a dead-letter queue."
			m.VisibleAt, m.Handles, m.Latest, m.MovedFrom = now, map[string]bool{}, "", q.ARN
			m.ReceiveCount = 0
			dlq.Messages = append(dlq.Messages, m)
			dlq.notify()
			continue
		}
		m.ReceiveCount++
		if m.FirstReceive.IsZero() {
			m.FirstReceive = now
		}
		m.VisibleAt = now.Add(time.Duration(vis) * time.Second)
		m.Latest = s.hex(32) + m.ID
		m.Handles[m.Latest] = true
		xm := xSQSMessage{MessageID: m.ID, ReceiptHandle: m.Latest, MD5OfBody: m.MD5, Body: m.Body}
		if len(attrs) > 0 {
			all := contains(attrs, "All")
			xm.Attributes = map[string]string{}
			for k, v := range map[string]string{
				"ApproximateReceiveCount":          strconv.Itoa(m.ReceiveCount),
				"SentTimestamp":                    strconv.FormatInt(m.SentAt.UnixMilli(), 10),
				"ApproximateFirstReceiveTimestamp": strconv.FormatInt(m.FirstReceive.UnixMilli(), 10),
			} {
				if all || contains(attrs, k) {
					xm.Attributes[k] = v
				}
			}
			if m.MovedFrom != "" && (all || contains(attrs, "DeadLetterQueueSourceArn")) {
				xm.Attributes["DeadLetterQueueSourceArn"] = m.MovedFrom
			}
		}
		out = append(out, xm)
		kept = append(kept, m)
	}
	q.Messages = kept
	return out
}

// expireLocked drops messages older than the retention period.
func (s *Server) expireLocked(q *sqsQueue, now time.Time) {
	keep := time.Duration(q.intAttr("MessageRetentionPeriod", int(sqsDefaultRetention/time.Second))) * time.Second
	kept := q.Messages[:0]
	for _, m := range q.Messages {
		if now.Sub(m.SentAt) < keep {
			kept = append(kept, m)
		}
	}
	q.Messages = kept
}

// nextVisibleLocked is the earliest moment a message of q becomes deliverable.
func (q *sqsQueue) nextVisibleLocked() time.Time {
	var next time.Time
	for _, m := range q.Messages {
		if next.IsZero() || m.VisibleAt.Before(next) {
			next = m.VisibleAt
		}
	}
	return next
}

// waitLongPoll waits (without the lock) until a message may be deliverable or the
// poll's deadline passes on the injected clock, then asks again.
func (s *Server) waitLongPoll(ctx context.Context, lp *longPoll) (any, *apiError) {
	for {
		s.mu.Lock()
		now := s.clock.Now()
		wake := lp.deadline
		if v := lp.queue.nextVisibleLocked(); !v.IsZero() && v.Before(wake) {
			wake = v
		}
		changed := lp.queue.changed
		s.mu.Unlock()
		if d := wake.Sub(now); d > 0 {
			timer := s.clock.NewTimer(d)
			select {
			case <-ctx.Done():
				timer.Stop()
				return map[string]any{"Messages": []xSQSMessage{}}, nil
			case <-changed:
			case <-timer.C():
			}
			timer.Stop()
		}
		s.mu.Lock()
		out, aerr := lp.retry()
		last := !s.clock.Now().Before(lp.deadline)
		s.mu.Unlock()
		if aerr != nil || last || len(out.(map[string]any)["Messages"].([]xSQSMessage)) > 0 {
			return out, aerr
		}
	}
}

func (s *Server) messageByHandleLocked(q *sqsQueue, handle string) (*sqsMessage, int) {
	for i, m := range q.Messages {
		if m.Handles[handle] {
			return m, i
		}
	}
	return nil, -1
}

func invalidHandle(h string) *apiError {
	return &apiError{Status: 400, Code: "ReceiptHandleIsInvalid", Query: "ReceiptHandleIsInvalid", Message: fmt.Sprintf("The input receipt handle \"%s\" is not a valid receipt handle.", h)}
}

func (s *Server) sqsDeleteMessage(f form) (any, *apiError) {
	var in struct {
		QueueURL      string `json:"QueueUrl"`
		ReceiptHandle string
	}
	if err := decodeJSON(f, &in); err != nil {
		return nil, err
	}
	q, err := s.queueByURLLocked(in.QueueURL)
	if err != nil {
		return nil, err
	}
	if in.ReceiptHandle == "" {
		return nil, invalidHandle("")
	}
	if _, i := s.messageByHandleLocked(q, in.ReceiptHandle); i >= 0 {
		q.Messages = append(q.Messages[:i:i], q.Messages[i+1:]...)
		return struct{}{}, nil
	}
	// A handle of a message already deleted: SQS answers success (deletes are
	// idempotent). **Guess**: we cannot tell a forged handle from a used one.
	if len(in.ReceiptHandle) > 32 {
		return struct{}{}, nil
	}
	return nil, invalidHandle(in.ReceiptHandle)
}

func (s *Server) sqsChangeVisibility(f form) (any, *apiError) {
	var in struct {
		QueueURL          string `json:"QueueUrl"`
		ReceiptHandle     string
		VisibilityTimeout *int
	}
	if err := decodeJSON(f, &in); err != nil {
		return nil, err
	}
	q, err := s.queueByURLLocked(in.QueueURL)
	if err != nil {
		return nil, err
	}
	if in.VisibilityTimeout == nil || *in.VisibilityTimeout < 0 || *in.VisibilityTimeout > sqsMaxVisibility {
		return nil, sqsInvalid("Value for parameter VisibilityTimeout is invalid. Reason: Must be between 0 and 43200.")
	}
	m, _ := s.messageByHandleLocked(q, in.ReceiptHandle)
	if m == nil {
		return nil, invalidHandle(in.ReceiptHandle)
	}
	now := s.clock.Now()
	if !now.Before(m.VisibleAt) || m.Latest != in.ReceiptHandle {
		return nil, &apiError{Status: 400, Code: "MessageNotInflight", Query: "AWS.SimpleQueueService.MessageNotInflight", Message: "Message does not exist or is not available for visibility timeout change."}
	}
	m.VisibleAt = now.Add(time.Duration(*in.VisibilityTimeout) * time.Second)
	q.notify()
	return struct{}{}, nil
}

func (s *Server) sqsGetQueueAttributes(f form) (any, *apiError) {
	var in struct {
		QueueURL       string `json:"QueueUrl"`
		AttributeNames []string
	}
	if err := decodeJSON(f, &in); err != nil {
		return nil, err
	}
	q, err := s.queueByURLLocked(in.QueueURL)
	if err != nil {
		return nil, err
	}
	now := s.clock.Now()
	s.expireLocked(q, now)
	visible, inflight, delayed := 0, 0, 0
	for _, m := range q.Messages {
		switch {
		case !now.Before(m.VisibleAt):
			visible++
		case m.ReceiveCount > 0:
			inflight++
		default:
			delayed++
		}
	}
	all := map[string]string{
		"QueueArn":                              q.ARN,
		"ApproximateNumberOfMessages":           strconv.Itoa(visible),
		"ApproximateNumberOfMessagesNotVisible": strconv.Itoa(inflight),
		"ApproximateNumberOfMessagesDelayed":    strconv.Itoa(delayed),
		"CreatedTimestamp":                      strconv.FormatInt(q.Created.Unix(), 10),
		"VisibilityTimeout":                     strconv.Itoa(q.intAttr("VisibilityTimeout", 30)),
		"ReceiveMessageWaitTimeSeconds":         strconv.Itoa(q.intAttr("ReceiveMessageWaitTimeSeconds", 0)),
		"DelaySeconds":                          strconv.Itoa(q.intAttr("DelaySeconds", 0)),
		"MessageRetentionPeriod":                strconv.Itoa(q.intAttr("MessageRetentionPeriod", int(sqsDefaultRetention/time.Second))),
		"MaximumMessageSize":                    strconv.Itoa(q.intAttr("MaximumMessageSize", sqsMaxBody)),
	}
	if v, ok := q.Attrs["RedrivePolicy"]; ok {
		all["RedrivePolicy"] = v
	}
	out := map[string]string{}
	for _, name := range in.AttributeNames {
		if name == "All" {
			out = all
			break
		}
		v, ok := all[name]
		if !ok && !contains(sqsAttrNames, name) {
			return nil, &apiError{Status: 400, Code: "InvalidAttributeName", Query: "InvalidAttributeName", Message: "Unknown Attribute " + name + "."}
		}
		if ok {
			out[name] = v
		}
	}
	return map[string]any{"Attributes": out}, nil
}

// QueueMessages returns the bodies of the messages on a queue (visible or not), in
// send order: tests use it to look at a dead-letter queue without receiving.
func (s *Server) QueueMessages(name string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queues[name]
	if q == nil {
		return nil
	}
	s.expireLocked(q, s.clock.Now())
	out := make([]string, 0, len(q.Messages))
	for _, m := range q.Messages {
		out = append(out, m.Body)
	}
	return out
}

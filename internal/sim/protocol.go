package sim

import (
	"bytes"
	"encoding/xml"
	"net/http"
	"strconv"
	"time"
)

// awsQuery is the AWS Query protocol (Auto Scaling, STS): <OpResponse><OpResult>…</OpResult>
// <ResponseMetadata><RequestId/></ResponseMetadata></OpResponse>; lists are <member>.
type awsQuery struct{ ns string }

// readQuery reads an AWS Query request: form body (or URL query), operation in Action.
func readQuery(r *http.Request) (string, form, *apiError) {
	if err := r.ParseForm(); err != nil {
		return "", form{}, validation("cannot parse the form body: %v", err)
	}
	return r.Form.Get("Action"), newForm(r.Form), nil
}

func (awsQuery) readRequest(r *http.Request) (string, form, *apiError) { return readQuery(r) }

func (ec2Query) readRequest(r *http.Request) (string, form, *apiError) { return readQuery(r) }

func (p awsQuery) writeResult(w http.ResponseWriter, op, requestID string, result any) {
	var buf bytes.Buffer
	buf.WriteString(`<?xml version="1.0"?>` + "\n")
	buf.WriteString(`<` + op + `Response xmlns="` + p.ns + `">`)
	if result != nil {
		enc := xml.NewEncoder(&buf)
		if err := enc.EncodeElement(result, xml.StartElement{Name: xml.Name{Local: op + "Result"}}); err != nil {
			writeXML(w, http.StatusInternalServerError, []byte("<ErrorResponse><Error><Code>InternalFailure</Code><Message>"+xmlEscape(err.Error())+"</Message></Error></ErrorResponse>"))
			return
		}
	}
	buf.WriteString(`<ResponseMetadata><RequestId>` + requestID + `</RequestId></ResponseMetadata></` + op + `Response>`)
	writeXML(w, http.StatusOK, buf.Bytes())
}

func (p awsQuery) writeError(w http.ResponseWriter, requestID string, e *apiError) {
	typ := "Sender"
	if e.Status >= 500 {
		typ = "Receiver"
	}
	body := `<?xml version="1.0"?>` + "\n" + `<ErrorResponse xmlns="` + p.ns + `"><Error><Type>` + typ + `</Type><Code>` + xmlEscape(e.Code) +
		`</Code><Message>` + xmlEscape(e.Message) + `</Message></Error><RequestId>` + requestID + `</RequestId></ErrorResponse>`
	writeXML(w, e.Status, []byte(body))
}

func (awsQuery) throttle() *apiError {
	return &apiError{Status: 400, Code: "Throttling", Message: "Rate exceeded"}
}

func (awsQuery) internal() *apiError {
	return &apiError{Status: 500, Code: "InternalFailure", Message: "The request processing has failed because of an unknown error, exception or failure."}
}

// ec2Query is the EC2 protocol: <OpResponse><requestId/>…fields…</OpResponse>; lists are <item>.
type ec2Query struct{ ns string }

// ec2Meta is embedded in every EC2 result.
type ec2Meta struct {
	XMLNS     string `xml:"xmlns,attr"`
	RequestID string `xml:"requestId"`
}

type ec2Result interface{ setMeta(ns, requestID string) }

func (m *ec2Meta) setMeta(ns, id string) { m.XMLNS, m.RequestID = ns, id }

func (p ec2Query) writeResult(w http.ResponseWriter, op, requestID string, result any) {
	if r, ok := result.(ec2Result); ok {
		r.setMeta(p.ns, requestID)
	}
	var buf bytes.Buffer
	buf.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	enc := xml.NewEncoder(&buf)
	if err := enc.EncodeElement(result, xml.StartElement{Name: xml.Name{Local: op + "Response"}}); err != nil {
		p.writeError(w, requestID, &apiError{Status: 500, Code: "InternalError", Message: err.Error()})
		return
	}
	writeXML(w, http.StatusOK, buf.Bytes())
}

func (p ec2Query) writeError(w http.ResponseWriter, requestID string, e *apiError) {
	body := `<?xml version="1.0" encoding="UTF-8"?>` + "\n" + `<Response><Errors><Error><Code>` + xmlEscape(e.Code) + `</Code><Message>` +
		xmlEscape(e.Message) + `</Message></Error></Errors><RequestID>` + requestID + `</RequestID></Response>`
	writeXML(w, e.Status, []byte(body))
}

func (ec2Query) throttle() *apiError {
	return &apiError{Status: 503, Code: "RequestLimitExceeded", Message: "Request limit exceeded."}
}

func (ec2Query) internal() *apiError {
	return &apiError{Status: 500, Code: "InternalError", Message: "An internal error has occurred."}
}

func writeXML(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func xmlEscape(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// ts formats a timestamp the way AWS Query responses do.
func ts(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

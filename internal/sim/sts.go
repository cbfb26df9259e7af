package sim

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// The static test credentials: the default identity of the simulated STS (what
// Environment.Vars exports).
const (
	AccessKeyID     = "AKIDSIMULATED"
	SecretAccessKey = "simulated"
)

// Identity is a principal the simulated STS knows: its keys and who it is.
// Presigned requests are verified against SecretAccessKey (and SessionToken).
type Identity struct {
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string // "" for long-term keys
	// ARN: arn:aws:iam::ACCOUNT:user/NAME or arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION.
	ARN string
	// UserID: AIDA… for a user, AROA…:SESSION for an assumed role (as STS reports them).
	UserID string
}

// Account is the account id in the identity's ARN.
func (id Identity) Account() string {
	parts := strings.SplitN(id.ARN, ":", 6)
	if len(parts) < 5 {
		return ""
	}
	return parts[4]
}

// AssumedRole is the identity of a session of role (credentials as the Lambda
// runtime gets them), for account.
func AssumedRole(account, role, session, accessKeyID, secret, sessionToken string) Identity {
	return Identity{
		AccessKeyID: accessKeyID, SecretAccessKey: secret, SessionToken: sessionToken,
		ARN:    "arn:aws:sts::" + account + ":assumed-role/" + role + "/" + session,
		UserID: "AROASIMULATED" + strings.ToUpper(role) + ":" + session,
	}
}

func (s *Server) defaultIdentity() Identity {
	return Identity{AccessKeyID: AccessKeyID, SecretAccessKey: SecretAccessKey,
		ARN: "arn:aws:iam::" + s.opts.AccountID + ":user/sim", UserID: "AIDASIMULATEDUSER0001"}
}

// AddIdentity makes the simulated STS know id (replacing one with its key).
func (s *Server) AddIdentity(id Identity) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.identities[id.AccessKeyID] = id
}

// presignedValidity is how long a presigned GetCallerIdentity is accepted after
// its X-Amz-Date, whatever X-Amz-Expires says (aws-iam-authenticator, pkg/token:
// "the token expires 15 minutes after the x-amz-date timestamp regardless").
const presignedValidity = 15 * time.Minute

// Form keys the sts protocol adds for its handlers (not AWS parameters).
const (
	formCaller   = "X-Sim-Caller"
	formJSONWant = "X-Sim-Accept-JSON"
)

// stsQuery is the AWS Query protocol plus what STS adds: a presigned GET (the
// EKS token) is verified — signature, session token, 15-minute validity — and
// answered in JSON when the caller asks (Accept: application/json, as
// aws-iam-authenticator does).
type stsQuery struct {
	awsQuery
	srv *Server
}

func (p stsQuery) readRequest(r *http.Request) (string, form, *apiError) {
	op, f, err := p.awsQuery.readRequest(r)
	if err != nil {
		return op, f, err
	}
	q := r.URL.Query()
	akid := ""
	if q.Get("X-Amz-Signature") != "" {
		id, aerr := p.srv.verifyPresigned(r)
		if aerr != nil {
			return op, f, aerr
		}
		akid = id.AccessKeyID
	} else if scope := credentialScope(r.Header.Get("Authorization")); len(scope) > 0 {
		akid = scope[0]
	}
	f.v.Set(formCaller, akid)
	if strings.Contains(r.Header.Get("Accept"), "application/json") {
		f.v.Set(formJSONWant, "true")
	}
	return op, f, nil
}

// callerIdentity is GetCallerIdentity's result, in XML or (asJSON) JSON.
type callerIdentity struct {
	UserID  string `xml:"UserId" json:"UserId"`
	Account string `xml:"Account" json:"Account"`
	Arn     string `xml:"Arn" json:"Arn"`
	asJSON  bool
}

func (p stsQuery) writeResult(w http.ResponseWriter, op, requestID string, result any) {
	ci, ok := result.(callerIdentity)
	if !ok || !ci.asJSON {
		p.awsQuery.writeResult(w, op, requestID, result)
		return
	}
	var body struct {
		Response struct {
			Result   callerIdentity `json:"GetCallerIdentityResult"`
			Metadata struct {
				RequestID string `json:"RequestId"`
			} `json:"ResponseMetadata"`
		} `json:"GetCallerIdentityResponse"`
	}
	body.Response.Result = ci
	body.Response.Metadata.RequestID = requestID
	b, _ := json.Marshal(body)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

func (s *Server) stsOps() map[string]func(form) (any, *apiError) {
	return map[string]func(form) (any, *apiError){
		"GetCallerIdentity": func(f form) (any, *apiError) {
			// Signatures of ordinary calls are not verified: an unknown key is the
			// default identity ("any credentials work").
			id, ok := s.identities[f.str(formCaller)]
			if !ok {
				id = s.defaultIdentity()
			}
			return callerIdentity{UserID: id.UserID, Account: id.Account(), Arn: id.ARN, asJSON: f.str(formJSONWant) == "true"}, nil
		},
	}
}

// credentialScope splits the Credential= part of a SigV4 Authorization header
// (AKID/date/region/service/aws4_request); nil when there is none.
func credentialScope(auth string) []string {
	i := strings.Index(auth, "Credential=")
	if i < 0 {
		return nil
	}
	parts := strings.Split(strings.SplitN(auth[i+len("Credential="):], ",", 2)[0], "/")
	if len(parts) < 5 {
		return nil
	}
	return parts
}

func stsDenied(code, format string, args ...any) *apiError {
	return &apiError{Status: http.StatusForbidden, Code: code, Message: fmt.Sprintf(format, args...)}
}

// verifyPresigned checks a presigned request the way STS does: a known key, its
// session token, a signature over exactly the signed headers, and a date no
// older than 15 minutes (by the simulation's clock). It signs the request again
// with the SDK's own SigV4 signer and compares.
func (s *Server) verifyPresigned(r *http.Request) (Identity, *apiError) {
	q := r.URL.Query()
	scope := strings.Split(q.Get("X-Amz-Credential"), "/")
	if len(scope) != 5 || scope[4] != "aws4_request" {
		return Identity{}, &apiError{Status: 400, Code: "IncompleteSignature", Message: "X-Amz-Credential must be AKID/date/region/service/aws4_request"}
	}
	s.mu.Lock()
	id, known := s.identities[scope[0]]
	now := s.clock.Now()
	s.mu.Unlock()
	if !known {
		return Identity{}, stsDenied("InvalidClientTokenId", "The security token included in the request is invalid.")
	}
	if q.Get("X-Amz-Security-Token") != id.SessionToken {
		return Identity{}, stsDenied("InvalidClientTokenId", "The security token included in the request is invalid.")
	}
	date, err := time.Parse("20060102T150405Z", q.Get("X-Amz-Date"))
	if err != nil {
		return Identity{}, &apiError{Status: 400, Code: "IncompleteSignature", Message: "X-Amz-Date is missing or malformed"}
	}
	const amz = "20060102T150405Z"
	if now.After(date.Add(presignedValidity)) {
		return Identity{}, stsDenied("SignatureDoesNotMatch", "Signature expired: %s is now earlier than %s (%s - 15 min.)",
			date.UTC().Format(amz), now.Add(-presignedValidity).UTC().Format(amz), now.UTC().Format(amz))
	}
	if date.After(now.Add(presignedValidity)) {
		return Identity{}, stsDenied("SignatureDoesNotMatch", "Signature not yet current: %s is still later than %s (%s + 15 min.)",
			date.UTC().Format(amz), now.Add(presignedValidity).UTC().Format(amz), now.UTC().Format(amz))
	}

	given := q.Get("X-Amz-Signature")
	q.Del("X-Amz-Signature")
	u := url.URL{Scheme: "https", Host: r.Host, Path: r.URL.Path, RawQuery: q.Encode()}
	again, err := http.NewRequestWithContext(context.WithoutCancel(r.Context()), r.Method, u.String(), nil)
	if err != nil {
		return Identity{}, &apiError{Status: 400, Code: "IncompleteSignature", Message: err.Error()}
	}
	again.Host = r.Host
	for _, h := range strings.Split(q.Get("X-Amz-SignedHeaders"), ";") {
		if h != "" && h != "host" {
			again.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
		}
	}
	creds := sdkaws.Credentials{AccessKeyID: id.AccessKeyID, SecretAccessKey: id.SecretAccessKey, SessionToken: id.SessionToken}
	const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	signed, _, err := v4.NewSigner().PresignHTTP(again.Context(), creds, again, emptySHA256, scope[3], scope[2], date)
	if err != nil {
		return Identity{}, &apiError{Status: 500, Code: "InternalFailure", Message: err.Error()}
	}
	want := ""
	if su, err := url.Parse(signed); err == nil {
		want = su.Query().Get("X-Amz-Signature")
	}
	if !hmac.Equal([]byte(want), []byte(given)) {
		return Identity{}, stsDenied("SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")
	}
	return id, nil
}

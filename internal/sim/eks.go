package sim

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// ClusterSpec is an EKS cluster of the simulation: its name and the
// kube-apiserver DescribeCluster points at (the local control plane).
type ClusterSpec struct {
	Name     string
	Endpoint string // https://127.0.0.1:PORT
	CAData   []byte // PEM of the CA that signed the apiserver's certificate
	Version  string // Kubernetes minor version; default "1.37"
}

type cluster struct {
	spec    ClusterSpec
	created time.Time
}

// clusterName is EKS's documented name pattern (CreateCluster: 1–100 characters).
var clusterName = regexp.MustCompile(`^[0-9A-Za-z][A-Za-z0-9\-_]{0,99}$`)

// CreateCluster adds (or replaces) an ACTIVE EKS cluster.
func (s *Server) CreateCluster(spec ClusterSpec) error {
	if !clusterName.MatchString(spec.Name) {
		return fmt.Errorf("simulated eks: cluster name %q: want 1-100 letters, digits, - and _, starting with a letter or digit", spec.Name)
	}
	if !strings.HasPrefix(spec.Endpoint, "https://") || len(spec.CAData) == 0 {
		return fmt.Errorf("simulated eks: cluster %s needs an https endpoint and its CA", spec.Name)
	}
	if spec.Version == "" {
		spec.Version = "1.37"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clusters[spec.Name] = &cluster{spec: spec, created: s.clock.Now()}
	return nil
}

// ClusterARN is the ARN DescribeCluster reports for name.
func (s *Server) ClusterARN(name string) string {
	return "arn:aws:eks:" + s.opts.Region + ":" + s.opts.AccountID + ":cluster/" + name
}

func (s *Server) eksOps() map[string]func(form) (any, *apiError) {
	return map[string]func(form) (any, *apiError){
		"DescribeCluster": func(f form) (any, *apiError) {
			name := f.str("name")
			c, ok := s.clusters[name]
			if !ok {
				return nil, &apiError{Status: http.StatusNotFound, Code: "ResourceNotFoundException", Message: "No cluster found for name: " + name + "."}
			}
			return map[string]any{"cluster": s.describeClusterLocked(c)}, nil
		},
	}
}

func (s *Server) describeClusterLocked(c *cluster) map[string]any {
	return map[string]any{
		"name":                 c.spec.Name,
		"arn":                  s.ClusterARN(c.spec.Name),
		"createdAt":            float64(c.created.UnixMilli()) / 1000,
		"version":              c.spec.Version,
		"endpoint":             c.spec.Endpoint,
		"roleArn":              "arn:aws:iam::" + s.opts.AccountID + ":role/" + c.spec.Name + "-cluster",
		"status":               "ACTIVE",
		"platformVersion":      "eks.1",
		"certificateAuthority": map[string]string{"data": base64.StdEncoding.EncodeToString(c.spec.CAData)},
		"resourcesVpcConfig":   map[string]any{"endpointPublicAccess": true, "endpointPrivateAccess": false},
		"accessConfig":         map[string]string{"authenticationMode": "API"},
		"tags":                 map[string]string{},
	}
}

// restJSON is the REST-JSON protocol (EKS): the operation from method and path,
// results as JSON bodies, errors as X-Amzn-ErrorType plus {"message"}.
type restJSON struct{}

func (restJSON) readRequest(r *http.Request) (string, form, *apiError) {
	if r.Method == http.MethodGet {
		if rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/clusters/"); ok && rest != "" && !strings.Contains(rest, "/") {
			name, err := url.PathUnescape(rest)
			if err != nil {
				return "", form{}, &apiError{Status: 400, Code: "InvalidParameterException", Message: "malformed cluster name in the path"}
			}
			return "DescribeCluster", newForm(url.Values{"name": {name}}), nil
		}
	}
	return r.Method + " " + r.URL.Path, newForm(url.Values{}), nil
}

func (restJSON) writeResult(w http.ResponseWriter, _, requestID string, result any) {
	b, err := json.Marshal(result)
	if err != nil {
		restJSON{}.writeError(w, requestID, &apiError{Status: 500, Code: "ServerException", Message: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, requestID, b)
}

func (restJSON) writeError(w http.ResponseWriter, requestID string, e *apiError) {
	w.Header().Set("X-Amzn-ErrorType", e.Code)
	b, _ := json.Marshal(map[string]string{"message": e.Message})
	writeJSON(w, e.Status, requestID, b)
}

func (restJSON) throttle() *apiError {
	return &apiError{Status: http.StatusTooManyRequests, Code: "ThrottlingException", Message: "Rate exceeded"}
}

func (restJSON) internal() *apiError {
	return &apiError{Status: 500, Code: "ServerException", Message: "These errors are usually caused by a server-side issue."}
}

func writeJSON(w http.ResponseWriter, status int, requestID string, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	if requestID != "" {
		w.Header().Set("X-Amzn-RequestId", requestID)
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

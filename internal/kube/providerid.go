package kube

import (
	"regexp"
	"strings"

	"github.com/recycler/recycler/internal/cloud"
)

// ProviderID is a parsed AWS spec.providerID: aws:///<az>/<instance-id>.
type ProviderID struct {
	AvailabilityZone string
	InstanceID       string
}

// String formats the provider ID as the AWS cloud provider writes it.
func (p ProviderID) String() string {
	return "aws:///" + p.AvailabilityZone + "/" + p.InstanceID
}

var (
	// Regions and zones: us-east-1a, ap-southeast-1b, us-gov-west-1a, local and
	// wavelength zones such as us-west-2-lax-1a or us-east-1-wl1-bos-wlz-1.
	azRE = regexp.MustCompile(`^[a-z]{2}(-[a-z0-9]+)+$`)
)

// ValidateInstanceID reports whether s is an EC2 instance ID (i- + 8 or 17 hex digits).
func ValidateInstanceID(s string) error {
	if !cloud.IsInstanceID(s) {
		return &InstanceIDError{Value: s}
	}
	return nil
}

// ParseProviderID parses spec.providerID strictly: exactly aws:///<az>/<instance-id>,
// nothing before or after, a well-formed zone and instance ID.
func ParseProviderID(s string) (ProviderID, error) {
	const prefix = "aws:///"
	if s == "" {
		return ProviderID{}, &ProviderIDError{Value: s, Reason: "empty"}
	}
	if !strings.HasPrefix(s, prefix) {
		return ProviderID{}, &ProviderIDError{Value: s, Reason: "does not start with " + prefix}
	}
	parts := strings.Split(strings.TrimPrefix(s, prefix), "/")
	if len(parts) != 2 {
		return ProviderID{}, &ProviderIDError{Value: s, Reason: "want exactly two path segments after " + prefix}
	}
	az, id := parts[0], parts[1]
	if !azRE.MatchString(az) {
		return ProviderID{}, &ProviderIDError{Value: s, Reason: "availability zone " + quote(az) + " is not a lowercase AWS zone name"}
	}
	if !cloud.IsInstanceID(id) {
		return ProviderID{}, &ProviderIDError{Value: s, Reason: "instance id " + quote(id) + " is not i- followed by 8 or 17 lowercase hex digits"}
	}
	return ProviderID{AvailabilityZone: az, InstanceID: id}, nil
}

func quote(s string) string { return `"` + s + `"` }

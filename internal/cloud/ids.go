package cloud

import (
	"fmt"
	"regexp"
	"strings"
)

// InstanceIDPattern is the shape of an EC2 instance id — i- and 17 (or, for older
// instances, 8) lowercase hex digits — unanchored, to find ids in text; the one
// pattern of the project (the CLI, the request, the Kubernetes providerID, the
// simulator all check with IsInstanceID).
const InstanceIDPattern = `i-(?:[0-9a-f]{17}|[0-9a-f]{8})`

var instanceIDPattern = regexp.MustCompile(`^` + InstanceIDPattern + `$`)

// IsInstanceID reports whether id has the shape of an EC2 instance id.
func IsInstanceID(id string) bool { return instanceIDPattern.MatchString(id) }

// ValidateInstanceID checks the EC2 instance id format (i- followed by 8 or 17
// lowercase hex digits) before any call is made, so a typo never reaches the cloud.
func ValidateInstanceID(id string) error {
	if !IsInstanceID(id) {
		return fmt.Errorf("instance id %q: want i- followed by 8 or 17 lowercase hex digits (e.g. i-0123456789abcdef0): %w", id, ErrValidation)
	}
	return nil
}

// ValidateInstanceIDs validates every id and rejects an empty list and duplicates.
func ValidateInstanceIDs(ids []string) error {
	if len(ids) == 0 {
		return fmt.Errorf("no instance ids given: %w", ErrValidation)
	}
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if err := ValidateInstanceID(id); err != nil {
			return err
		}
		if seen[id] {
			return fmt.Errorf("instance id %s given twice: %w", id, ErrValidation)
		}
		seen[id] = true
	}
	return nil
}

// ValidateGroupName checks an Auto Scaling group name: 1–255 characters, printable,
// and not an ARN (the port works with names).
func ValidateGroupName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("group name is empty: %w", ErrValidation)
	case len(name) > 255:
		return fmt.Errorf("group name %.20q…: longer than 255 characters: %w", name, ErrValidation)
	case strings.HasPrefix(name, "arn:"):
		return fmt.Errorf("group name %q: give the group's name, not its ARN: %w", name, ErrValidation)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("group name %q: contains a control character: %w", name, ErrValidation)
		}
	}
	return nil
}

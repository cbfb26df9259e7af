package asl

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// choiceRule is one Choice rule: a boolean combination (And/Or/Not) or a data test.
type choiceRule struct {
	next string // top-level rules only

	and, or []*choiceRule
	not     *choiceRule

	variable    *refPath
	op          string // operator name without the "Path" suffix, e.g. "StringEquals"
	operand     any
	operandPath *refPath
	pattern     []globPart // StringMatches
}

type opKind int

const (
	opString opKind = iota + 1
	opNumeric
	opBoolean
	opTimestamp
	opTypeTest
)

// choiceOps lists every comparison operator and the type of its operand.
func choiceOpKind(op string) (opKind, bool) {
	switch op {
	case "StringEquals", "StringLessThan", "StringGreaterThan", "StringLessThanEquals", "StringGreaterThanEquals", "StringMatches":
		return opString, true
	case "NumericEquals", "NumericLessThan", "NumericGreaterThan", "NumericLessThanEquals", "NumericGreaterThanEquals":
		return opNumeric, true
	case "BooleanEquals":
		return opBoolean, true
	case "TimestampEquals", "TimestampLessThan", "TimestampGreaterThan", "TimestampLessThanEquals", "TimestampGreaterThanEquals":
		return opTimestamp, true
	case "IsNull", "IsPresent", "IsNumeric", "IsString", "IsBoolean", "IsTimestamp":
		return opTypeTest, true
	}
	return 0, false
}

// parseChoiceRule parses a rule; top says whether it is directly in Choices (and
// so must have Next) or nested in And/Or/Not (and must not).
func parseChoiceRule(v any, where string, top bool) (*choiceRule, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: a choice rule must be an object, got %s", where, typeName(v))
	}
	r := &choiceRule{}
	if n, has := obj["Next"]; has {
		if !top {
			return nil, fmt.Errorf("%s: \"Next\" is only allowed in a top-level choice rule, not inside And/Or/Not", where)
		}
		s, ok := n.(string)
		if !ok || s == "" {
			return nil, fmt.Errorf("%s.Next: must be a state name", where)
		}
		r.next = s
	} else if top {
		return nil, fmt.Errorf("%s: a top-level choice rule needs \"Next\"", where)
	}
	var ops []string
	for k := range obj {
		switch k {
		case "Next", "Comment", "Variable":
			continue
		}
		ops = append(ops, k)
	}
	sort.Strings(ops)
	if len(ops) != 1 {
		if len(ops) == 0 {
			return nil, fmt.Errorf("%s: the rule has no comparison operator and no And/Or/Not", where)
		}
		return nil, fmt.Errorf("%s: the rule must have exactly one operator, has %s", where, strings.Join(ops, ", "))
	}
	op := ops[0]
	switch op {
	case "And", "Or":
		if _, has := obj["Variable"]; has {
			return nil, fmt.Errorf("%s: %q cannot be combined with \"Variable\"", where, op)
		}
		list, ok := obj[op].([]any)
		if !ok || len(list) == 0 {
			return nil, fmt.Errorf("%s.%s: must be a non-empty array of choice rules", where, op)
		}
		for i, e := range list {
			sub, err := parseChoiceRule(e, fmt.Sprintf("%s.%s[%d]", where, op, i), false)
			if err != nil {
				return nil, err
			}
			if op == "And" {
				r.and = append(r.and, sub)
			} else {
				r.or = append(r.or, sub)
			}
		}
		return r, nil
	case "Not":
		if _, has := obj["Variable"]; has {
			return nil, fmt.Errorf("%s: \"Not\" cannot be combined with \"Variable\"", where)
		}
		sub, err := parseChoiceRule(obj["Not"], where+".Not", false)
		if err != nil {
			return nil, err
		}
		r.not = sub
		return r, nil
	}
	varStr, ok := obj["Variable"].(string)
	if !ok {
		return nil, fmt.Errorf("%s: operator %q needs a \"Variable\" string", where, op)
	}
	vp, err := compileRefPath(varStr)
	if err != nil {
		return nil, fmt.Errorf("%s.Variable: %w", where, err)
	}
	r.variable = vp
	base := op
	isPath := false
	if strings.HasSuffix(op, "Path") && op != "StringMatches" {
		base, isPath = strings.TrimSuffix(op, "Path"), true
	}
	kind, known := choiceOpKind(base)
	if !known || (isPath && (kind == opTypeTest || base == "StringMatches")) {
		return nil, fmt.Errorf("%s: unknown comparison operator %q", where, op)
	}
	r.op = base
	val := obj[op]
	if isPath {
		s, ok := val.(string)
		if !ok {
			return nil, fmt.Errorf("%s.%s: must be a path string", where, op)
		}
		p, err := compileRefPath(s)
		if err != nil {
			return nil, fmt.Errorf("%s.%s: %w", where, op, err)
		}
		r.operandPath = p
		return r, nil
	}
	switch kind {
	case opString:
		s, ok := val.(string)
		if !ok {
			return nil, fmt.Errorf("%s.%s: must be a string, got %s", where, op, typeName(val))
		}
		if op == "StringMatches" {
			r.pattern = compileGlob(s)
		}
	case opNumeric:
		if _, ok := toFloat(val); !ok {
			return nil, fmt.Errorf("%s.%s: must be a number, got %s", where, op, typeName(val))
		}
	case opBoolean, opTypeTest:
		if _, ok := val.(bool); !ok {
			return nil, fmt.Errorf("%s.%s: must be true or false, got %s", where, op, typeName(val))
		}
	case opTimestamp:
		s, ok := val.(string)
		if !ok {
			return nil, fmt.Errorf("%s.%s: must be a timestamp string, got %s", where, op, typeName(val))
		}
		if _, ok := parseTimestamp(s); !ok {
			return nil, fmt.Errorf("%s.%s: %q is not an RFC 3339 timestamp (e.g. 2016-03-14T01:59:00Z)", where, op, s)
		}
	}
	r.operand = val
	return r, nil
}

func parseTimestamp(s string) (time.Time, bool) {
	// RFC 3339 profile of ISO 8601 with an uppercase T separator and a zone.
	if len(s) < 20 || s[10] != 'T' {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	return t, err == nil
}

// eval reports whether the rule matches. A Variable or *Path operand that selects
// nothing is States.Runtime (IsPresent excepted); a value of another type than the
// operator compares is simply no match.
func (r *choiceRule) eval(input any, ctxObj func() any) (bool, *stateError) {
	switch {
	case r.and != nil:
		for _, s := range r.and {
			ok, err := s.eval(input, ctxObj)
			if err != nil || !ok {
				return false, err
			}
		}
		return true, nil
	case r.or != nil:
		for _, s := range r.or {
			ok, err := s.eval(input, ctxObj)
			if err != nil || ok {
				return ok, err
			}
		}
		return false, nil
	case r.not != nil:
		ok, err := r.not.eval(input, ctxObj)
		return !ok && err == nil, err
	}
	v, found := r.variable.get(input, ctxObj)
	if r.op == "IsPresent" {
		return found == r.operand.(bool), nil
	}
	if !found {
		return false, runtimeErr("Invalid path %q: the choice state's condition path references an invalid value", r.variable.raw)
	}
	operand := r.operand
	if r.operandPath != nil {
		o, ok := r.operandPath.get(input, ctxObj)
		if !ok {
			return false, runtimeErr("Invalid path %q: the choice state's comparison path references an invalid value", r.operandPath.raw)
		}
		operand = o
	}
	kind, _ := choiceOpKind(r.op)
	switch kind {
	case opTypeTest:
		want := operand.(bool)
		var is bool
		switch r.op {
		case "IsNull":
			is = v == nil
		case "IsNumeric":
			_, is = toFloat(v)
		case "IsString":
			_, is = v.(string)
		case "IsBoolean":
			_, is = v.(bool)
		case "IsTimestamp":
			s, ok := v.(string)
			if ok {
				_, is = parseTimestamp(s)
			}
		}
		return is == want, nil
	case opString:
		a, ok1 := v.(string)
		b, ok2 := operand.(string)
		if !ok1 || !ok2 {
			return false, nil
		}
		if r.op == "StringMatches" {
			return globMatch(r.pattern, a), nil
		}
		return compareResult(r.op, strings.Compare(a, b)), nil
	case opNumeric:
		_, ok1 := toFloat(v)
		_, ok2 := toFloat(operand)
		if !ok1 || !ok2 {
			return false, nil
		}
		return compareResult(r.op, numCompare(v, operand)), nil
	case opBoolean:
		a, ok1 := v.(bool)
		b, ok2 := operand.(bool)
		return ok1 && ok2 && a == b, nil
	case opTimestamp:
		as, ok1 := v.(string)
		bs, ok2 := operand.(string)
		if !ok1 || !ok2 {
			return false, nil
		}
		a, ok1 := parseTimestamp(as)
		b, ok2 := parseTimestamp(bs)
		if !ok1 || !ok2 {
			return false, nil
		}
		return compareResult(r.op, a.Compare(b)), nil
	}
	return false, nil
}

func compareResult(op string, c int) bool {
	switch {
	case strings.HasSuffix(op, "LessThanEquals"):
		return c <= 0
	case strings.HasSuffix(op, "GreaterThanEquals"):
		return c >= 0
	case strings.HasSuffix(op, "LessThan"):
		return c < 0
	case strings.HasSuffix(op, "GreaterThan"):
		return c > 0
	}
	return c == 0
}

// globPart is a literal run or a "*" of a StringMatches pattern.
type globPart struct {
	lit  string
	star bool
}

// compileGlob reads a StringMatches pattern: "*" matches any run of characters;
// "\*" is a literal star and "\\" a literal backslash.
func compileGlob(p string) []globPart {
	var parts []globPart
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			parts = append(parts, globPart{lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c == '\\' && i+1 < len(p) && (p[i+1] == '*' || p[i+1] == '\\'):
			lit.WriteByte(p[i+1])
			i++
		case c == '*':
			flush()
			parts = append(parts, globPart{star: true})
		default:
			lit.WriteByte(c)
		}
	}
	flush()
	return parts
}

func globMatch(parts []globPart, s string) bool {
	if len(parts) == 0 {
		return s == ""
	}
	if !parts[0].star {
		if !strings.HasPrefix(s, parts[0].lit) {
			return false
		}
		return globMatch(parts[1:], s[len(parts[0].lit):])
	}
	rest := parts[1:]
	if len(rest) == 0 {
		return true
	}
	for i := 0; i <= len(s); i++ {
		if globMatch(rest, s[i:]) {
			return true
		}
	}
	return false
}

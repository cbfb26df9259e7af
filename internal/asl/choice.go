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
	next, err := ruleNext(obj, where, top)
	if err != nil {
		return nil, err
	}
	op, err := ruleOperator(obj, where)
	if err != nil {
		return nil, err
	}
	r := &choiceRule{next: next}
	switch op {
	case "And", "Or", "Not":
		err = r.parseCombination(obj, op, where)
	default:
		err = r.parseComparison(obj, op, where)
	}
	if err != nil {
		return nil, err
	}
	return r, nil
}

// ruleNext returns a top-level rule's Next; nested rules must not have one.
func ruleNext(obj map[string]any, where string, top bool) (string, error) {
	n, has := obj["Next"]
	switch {
	case has && !top:
		return "", fmt.Errorf("%s: \"Next\" is only allowed in a top-level choice rule, not inside And/Or/Not", where)
	case !has && top:
		return "", fmt.Errorf("%s: a top-level choice rule needs \"Next\"", where)
	case !has:
		return "", nil
	}
	s, ok := n.(string)
	if !ok || s == "" {
		return "", fmt.Errorf("%s.Next: must be a state name", where)
	}
	return s, nil
}

// ruleOperator returns the rule's one operator field (a comparison or And/Or/Not).
func ruleOperator(obj map[string]any, where string) (string, error) {
	var ops []string
	for k := range obj {
		switch k {
		case "Next", "Comment", "Variable":
			continue
		}
		ops = append(ops, k)
	}
	sort.Strings(ops)
	switch len(ops) {
	case 1:
		return ops[0], nil
	case 0:
		return "", fmt.Errorf("%s: the rule has no comparison operator and no And/Or/Not", where)
	}
	return "", fmt.Errorf("%s: the rule must have exactly one operator, has %s", where, strings.Join(ops, ", "))
}

// parseCombination parses an And, Or or Not rule.
func (r *choiceRule) parseCombination(obj map[string]any, op, where string) error {
	if _, has := obj["Variable"]; has {
		return fmt.Errorf("%s: %q cannot be combined with \"Variable\"", where, op)
	}
	if op == "Not" {
		sub, err := parseChoiceRule(obj["Not"], where+".Not", false)
		r.not = sub
		return err
	}
	list, ok := obj[op].([]any)
	if !ok || len(list) == 0 {
		return fmt.Errorf("%s.%s: must be a non-empty array of choice rules", where, op)
	}
	subs := make([]*choiceRule, 0, len(list))
	for i, e := range list {
		sub, err := parseChoiceRule(e, fmt.Sprintf("%s.%s[%d]", where, op, i), false)
		if err != nil {
			return err
		}
		subs = append(subs, sub)
	}
	if op == "And" {
		r.and = subs
	} else {
		r.or = subs
	}
	return nil
}

// parseComparison parses a data test: Variable, operator and operand (or *Path).
func (r *choiceRule) parseComparison(obj map[string]any, op, where string) error {
	varStr, ok := obj["Variable"].(string)
	if !ok {
		return fmt.Errorf("%s: operator %q needs a \"Variable\" string", where, op)
	}
	vp, err := compileRefPath(varStr)
	if err != nil {
		return fmt.Errorf("%s.Variable: %w", where, err)
	}
	r.variable = vp
	base := op
	isPath := false
	if strings.HasSuffix(op, "Path") && op != "StringMatches" {
		base, isPath = strings.TrimSuffix(op, "Path"), true
	}
	kind, known := choiceOpKind(base)
	if !known || (isPath && (kind == opTypeTest || base == "StringMatches")) {
		return fmt.Errorf("%s: unknown comparison operator %q", where, op)
	}
	r.op = base
	val := obj[op]
	if isPath {
		s, ok := val.(string)
		if !ok {
			return fmt.Errorf("%s.%s: must be a path string", where, op)
		}
		if r.operandPath, err = compileRefPath(s); err != nil {
			return fmt.Errorf("%s.%s: %w", where, op, err)
		}
		return nil
	}
	if err := checkOperand(kind, val); err != "" {
		return fmt.Errorf("%s.%s: %s", where, op, err)
	}
	if op == "StringMatches" {
		r.pattern = compileGlob(val.(string))
	}
	r.operand = val
	return nil
}

// checkOperand says what is wrong with a literal operand of an operator of kind, or "".
func checkOperand(kind opKind, val any) string {
	switch kind {
	case opString:
		if _, ok := val.(string); !ok {
			return "must be a string, got " + typeName(val)
		}
	case opNumeric:
		if _, ok := toFloat(val); !ok {
			return "must be a number, got " + typeName(val)
		}
	case opBoolean, opTypeTest:
		if _, ok := val.(bool); !ok {
			return "must be true or false, got " + typeName(val)
		}
	case opTimestamp:
		s, ok := val.(string)
		if !ok {
			return "must be a timestamp string, got " + typeName(val)
		}
		if _, ok := parseTimestamp(s); !ok {
			return fmt.Sprintf("%q is not an RFC 3339 timestamp (e.g. 2016-03-14T01:59:00Z)", s)
		}
	}
	return ""
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
	if r.and != nil || r.or != nil || r.not != nil {
		return r.evalCombination(input, ctxObj)
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
	return r.compare(v, operand), nil
}

// compare applies the rule's operator to the variable's value v and the operand.
func (r *choiceRule) compare(v, operand any) bool {
	kind, _ := choiceOpKind(r.op)
	switch kind {
	case opTypeTest:
		return isType(r.op, v) == operand.(bool)
	case opString:
		a, ok1 := v.(string)
		b, ok2 := operand.(string)
		switch {
		case !ok1 || !ok2:
			return false
		case r.op == "StringMatches":
			return globMatch(r.pattern, a)
		}
		return compareResult(r.op, strings.Compare(a, b))
	case opNumeric:
		_, ok1 := toFloat(v)
		_, ok2 := toFloat(operand)
		return ok1 && ok2 && compareResult(r.op, numCompare(v, operand))
	case opBoolean:
		a, ok1 := v.(bool)
		b, ok2 := operand.(bool)
		return ok1 && ok2 && a == b
	case opTimestamp:
		a, ok1 := timestampOf(v)
		b, ok2 := timestampOf(operand)
		return ok1 && ok2 && compareResult(r.op, a.Compare(b))
	}
	return false
}

// evalCombination evaluates an And, Or or Not rule, stopping at the first operand
// that decides it.
func (r *choiceRule) evalCombination(input any, ctxObj func() any) (bool, *stateError) {
	if r.not != nil {
		ok, err := r.not.eval(input, ctxObj)
		return !ok && err == nil, err
	}
	all := r.and != nil
	subs := r.and
	if !all {
		subs = r.or
	}
	for _, s := range subs {
		ok, err := s.eval(input, ctxObj)
		if err != nil || ok != all {
			return ok && err == nil, err
		}
	}
	return all, nil
}

// isType answers a type test (IsNull, IsNumeric, …) about v.
func isType(op string, v any) bool {
	switch op {
	case "IsNull":
		return v == nil
	case "IsNumeric":
		_, is := toFloat(v)
		return is
	case "IsString":
		_, is := v.(string)
		return is
	case "IsBoolean":
		_, is := v.(bool)
		return is
	case "IsTimestamp":
		_, is := timestampOf(v)
		return is
	}
	return false
}

func timestampOf(v any) (time.Time, bool) {
	s, ok := v.(string)
	if !ok {
		return time.Time{}, false
	}
	return parseTimestamp(s)
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

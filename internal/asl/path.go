package asl

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/ohler55/ojg/jp"
)

// Step Functions has two kinds of JSONPath:
//   - Paths (InputPath, OutputPath, "key.$" values in Parameters/ResultSelector/
//     ItemSelector): full JSONPath, may select many nodes (then the result is an array).
//   - Reference paths (ResultPath, ItemsPath, Choice Variable and *Path operands,
//     SecondsPath, TimestampPath, ErrorPath, CausePath, *SecondsPath, MaxConcurrencyPath):
//     only "." and "[...]" steps naming one node.
// Full paths are evaluated by github.com/ohler55/ojg/jp; reference paths by the small
// evaluator below, which can also write (ResultPath).

// jsonPath is a compiled full path.
type jsonPath struct {
	raw      string
	context  bool // starts with "$$": evaluated against the context object
	expr     jp.Expr
	definite bool // selects at most one node, so its value is not wrapped in an array
	whole    bool // "$" or "$$"
}

func compilePath(s string) (*jsonPath, error) {
	p := &jsonPath{raw: s}
	expr := s
	if strings.HasPrefix(s, "$$") {
		p.context = true
		expr = s[1:]
	}
	if !strings.HasPrefix(expr, "$") {
		return nil, fmt.Errorf("path %q must start with \"$\"", s)
	}
	if expr == "$" {
		p.whole, p.definite = true, true
		return p, nil
	}
	x, err := jp.ParseString(expr)
	if err != nil {
		return nil, fmt.Errorf("path %q is not valid JSONPath: %w", s, err)
	}
	if len(x) == 0 {
		return nil, fmt.Errorf("path %q is empty", s)
	}
	if _, ok := x[0].(jp.Root); !ok {
		return nil, fmt.Errorf("path %q must start with \"$\"", s)
	}
	p.expr = x
	p.definite = true
	for _, f := range x {
		switch f.(type) {
		case jp.Wildcard, jp.Descent, *jp.Filter, jp.Slice, jp.Union:
			p.definite = false
		case jp.Root, jp.Child, jp.Nth, jp.Bracket:
		default:
			return nil, fmt.Errorf("path %q uses an unsupported JSONPath feature (%T)", s, f)
		}
	}
	return p, nil
}

// get evaluates the path. found is false when a definite path selects nothing; an
// indefinite path always "finds" (possibly an empty array), as in Step Functions.
func (p *jsonPath) get(input any, ctxObj func() any) (v any, found bool) {
	data := input
	if p.context {
		data = ctxObj()
	}
	if p.whole {
		return data, true
	}
	res := p.expr.Get(data)
	if p.definite {
		if len(res) == 0 {
			return nil, false
		}
		return res[0], true
	}
	if res == nil {
		res = []any{}
	}
	return res, true
}

func (p *jsonPath) String() string { return p.raw }

// refPath is a compiled reference path.
type refPath struct {
	raw     string
	context bool
	steps   []refStep
}

type refStep struct {
	key   string
	index int
	isIdx bool
}

func compileRefPath(s string) (*refPath, error) {
	p := &refPath{raw: s}
	rest := s
	if strings.HasPrefix(rest, "$$") {
		p.context = true
		rest = rest[2:]
	} else if strings.HasPrefix(rest, "$") {
		rest = rest[1:]
	} else {
		return nil, fmt.Errorf("reference path %q must start with \"$\"", s)
	}
	for len(rest) > 0 {
		switch rest[0] {
		case '.':
			rest = rest[1:]
			end := strings.IndexAny(rest, ".[")
			if end < 0 {
				end = len(rest)
			}
			name := rest[:end]
			if name == "" {
				return nil, fmt.Errorf("reference path %q has an empty field name (\"..\" is not allowed in a reference path)", s)
			}
			if strings.ContainsAny(name, "*@,:?()'\" ") {
				return nil, fmt.Errorf("reference path %q: field %q uses an operator not allowed in a reference path (only .name, ['name'] and [index] are)", s, name)
			}
			p.steps = append(p.steps, refStep{key: name})
			rest = rest[end:]
		case '[':
			end := strings.IndexByte(rest, ']')
			if end < 0 {
				return nil, fmt.Errorf("reference path %q has an unclosed \"[\"", s)
			}
			inner := rest[1:end]
			if len(inner) >= 2 && (inner[0] == '\'' || inner[0] == '"') && inner[len(inner)-1] == inner[0] {
				p.steps = append(p.steps, refStep{key: inner[1 : len(inner)-1]})
			} else if n, err := strconv.Atoi(inner); err == nil && n >= 0 {
				p.steps = append(p.steps, refStep{index: n, isIdx: true})
			} else {
				return nil, fmt.Errorf("reference path %q: %q is not allowed in a reference path (only ['name'] and a non-negative [index])", s, "["+inner+"]")
			}
			rest = rest[end+1:]
		default:
			return nil, fmt.Errorf("reference path %q is not valid: unexpected %q", s, rest)
		}
	}
	return p, nil
}

func (p *refPath) String() string { return p.raw }

func (p *refPath) get(input any, ctxObj func() any) (any, bool) {
	cur := input
	if p.context {
		cur = ctxObj()
	}
	for _, st := range p.steps {
		if st.isIdx {
			arr, ok := cur.([]any)
			if !ok || st.index >= len(arr) {
				return nil, false
			}
			cur = arr[st.index]
			continue
		}
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		cur, ok = obj[st.key]
		if !ok {
			return nil, false
		}
	}
	return cur, true
}

// set returns root with value stored at the path, creating missing objects on the
// way (Step Functions' ResultPath rule). It fails, rather than overwriting, when a
// step meets a value of the wrong type: that is States.ResultPathMatchFailure.
// root is modified in place; callers pass a copy.
func (p *refPath) set(root, value any) (any, error) {
	if len(p.steps) == 0 {
		return value, nil
	}
	var setIn func(cur any, i int) (any, error)
	setIn = func(cur any, i int) (any, error) {
		st := p.steps[i]
		last := i == len(p.steps)-1
		if st.isIdx {
			arr, ok := cur.([]any)
			if !ok || st.index >= len(arr) {
				return nil, fmt.Errorf("ResultPath %q: step [%d] does not name an existing array element in %s", p.raw, st.index, typeName(cur))
			}
			if last {
				arr[st.index] = value
				return arr, nil
			}
			v, err := setIn(arr[st.index], i+1)
			if err != nil {
				return nil, err
			}
			arr[st.index] = v
			return arr, nil
		}
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("ResultPath %q: cannot set field %q in a %s", p.raw, st.key, typeName(cur))
		}
		if last {
			obj[st.key] = value
			return obj, nil
		}
		child, ok := obj[st.key]
		if !ok {
			child = map[string]any{}
		}
		v, err := setIn(child, i+1)
		if err != nil {
			return nil, err
		}
		obj[st.key] = v
		return obj, nil
	}
	return setIn(root, 0)
}

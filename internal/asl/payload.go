package asl

import (
	"fmt"
	"sort"
	"strings"
)

// payloadTemplate is a compiled Parameters / ResultSelector / ItemSelector value:
// static JSON in which every object field named "key.$" is replaced by "key" set to
// the value of a path or an intrinsic function call.
type payloadTemplate struct {
	static any // a value without any ".$" field: used as is (copied)
	object []templateField
	array  []*payloadTemplate
	kind   byte // 's' static, 'o' object, 'a' array
}

type templateField struct {
	key  string
	sub  *payloadTemplate
	path *jsonPath
	call *intrinsic
}

// compileTemplate compiles a payload template; where names the field for messages.
func compileTemplate(v any, where string) (*payloadTemplate, error) {
	switch t := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out := &payloadTemplate{kind: 'o'}
		dynamic := false
		seen := map[string]bool{}
		for _, k := range keys {
			name := strings.TrimSuffix(k, ".$")
			if seen[name] {
				return nil, fmt.Errorf("%s: fields %q and %q both set %q", where, name, name+".$", name)
			}
			seen[name] = true
			if name != k {
				dynamic = true
				s, ok := t[k].(string)
				if !ok {
					return nil, fmt.Errorf("%s.%s: a field ending in \".$\" must be a string holding a path or an intrinsic function, got %s", where, k, typeName(t[k]))
				}
				if isIntrinsic(s) {
					call, err := parseIntrinsic(s)
					if err != nil {
						return nil, fmt.Errorf("%s.%s: %w", where, k, err)
					}
					out.object = append(out.object, templateField{key: name, call: call})
					continue
				}
				p, err := compilePath(s)
				if err != nil {
					return nil, fmt.Errorf("%s.%s: %w", where, k, err)
				}
				out.object = append(out.object, templateField{key: name, path: p})
				continue
			}
			sub, err := compileTemplate(t[k], where+"."+k)
			if err != nil {
				return nil, err
			}
			if sub.kind != 's' {
				dynamic = true
			}
			out.object = append(out.object, templateField{key: name, sub: sub})
		}
		if !dynamic {
			return &payloadTemplate{kind: 's', static: v}, nil
		}
		return out, nil
	case []any:
		out := &payloadTemplate{kind: 'a'}
		dynamic := false
		for i, e := range t {
			sub, err := compileTemplate(e, fmt.Sprintf("%s[%d]", where, i))
			if err != nil {
				return nil, err
			}
			if sub.kind != 's' {
				dynamic = true
			}
			out.array = append(out.array, sub)
		}
		if !dynamic {
			return &payloadTemplate{kind: 's', static: v}, nil
		}
		return out, nil
	}
	return &payloadTemplate{kind: 's', static: v}, nil
}

// eval builds the payload. A path that selects nothing is States.Runtime (Step
// Functions: "The JSONPath ... could not be found in the input"); a failing
// intrinsic is States.IntrinsicFailure.
func (t *payloadTemplate) eval(env *evalEnv, where string) (any, *stateError) {
	switch t.kind {
	case 's':
		return deepCopy(t.static), nil
	case 'a':
		out := make([]any, len(t.array))
		for i, e := range t.array {
			v, err := e.eval(env, where)
			if err != nil {
				return nil, err
			}
			out[i] = v
		}
		return out, nil
	}
	out := make(map[string]any, len(t.object))
	for _, f := range t.object {
		switch {
		case f.sub != nil:
			v, err := f.sub.eval(env, where)
			if err != nil {
				return nil, err
			}
			out[f.key] = v
		case f.call != nil:
			v, err := f.call.eval(env)
			if err != nil {
				return nil, err
			}
			out[f.key] = v
		default:
			v, ok := f.path.get(env.input, env.ctxObj)
			if !ok {
				return nil, runtimeErr("%s: the JSONPath %q specified for the field %q could not be found in the input", where, f.path.raw, f.key+".$")
			}
			out[f.key] = deepCopy(v)
		}
	}
	return out, nil
}

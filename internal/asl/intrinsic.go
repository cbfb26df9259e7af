package asl

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
)

// Intrinsic functions: "States.Name(arg, ...)" in a "key.$" field (and in Fail's
// ErrorPath/CausePath). Arguments are 'strings' (\' \\ \{ \} escapes), numbers,
// true/false/null, paths ($ or $$ …) and nested calls. Calls are parsed once, at
// Parse time, so a definition with a malformed call is rejected on load; a call that
// fails at run time (wrong argument type, bad JSON, …) fails the state with
// States.IntrinsicFailure.

type intrinsic struct {
	name string
	args []intrinsicArg
	spec *intrinsicSpec
}

type intrinsicArg struct {
	lit     any
	path    *jsonPath
	call    *intrinsic
	escaped bool // a string literal that contained \{ or \} (Format keeps them literal)
	raw     string
}

type evalEnv struct {
	input  any
	ctxObj func() any
	rand   func() float64
}

type intrinsicSpec struct {
	min, max int // max < 0: variadic
	fn       func(name string, args []any, raws []intrinsicArg, env *evalEnv) (any, *stateError)
}

// specFor returns the arity and implementation of a function, nil if unknown.
func specFor(name string) *intrinsicSpec {
	switch name {
	case "States.Format":
		return &intrinsicSpec{1, -1, fnFormat}
	case "States.StringToJson":
		return &intrinsicSpec{1, 1, fnStringToJSON}
	case "States.JsonToString":
		return &intrinsicSpec{1, 1, fnJSONToString}
	case "States.Array":
		return &intrinsicSpec{0, -1, fnArray}
	case "States.ArrayPartition":
		return &intrinsicSpec{2, 2, fnArrayPartition}
	case "States.ArrayContains":
		return &intrinsicSpec{2, 2, fnArrayContains}
	case "States.ArrayRange":
		return &intrinsicSpec{3, 3, fnArrayRange}
	case "States.ArrayGetItem":
		return &intrinsicSpec{2, 2, fnArrayGetItem}
	case "States.ArrayLength":
		return &intrinsicSpec{1, 1, fnArrayLength}
	case "States.ArrayUnique":
		return &intrinsicSpec{1, 1, fnArrayUnique}
	case "States.Base64Encode":
		return &intrinsicSpec{1, 1, fnBase64Encode}
	case "States.Base64Decode":
		return &intrinsicSpec{1, 1, fnBase64Decode}
	case "States.Hash":
		return &intrinsicSpec{2, 2, fnHash}
	case "States.JsonMerge":
		return &intrinsicSpec{3, 3, fnJSONMerge}
	case "States.MathRandom":
		return &intrinsicSpec{2, 3, fnMathRandom}
	case "States.MathAdd":
		return &intrinsicSpec{2, 2, fnMathAdd}
	case "States.StringSplit":
		return &intrinsicSpec{2, 2, fnStringSplit}
	case "States.UUID":
		return &intrinsicSpec{0, 0, fnUUID}
	}
	return nil
}

// isIntrinsic reports whether a "key.$" value is a function call rather than a path.
func isIntrinsic(s string) bool { return strings.HasPrefix(s, "States.") }

// parseIntrinsic parses a whole call expression.
func parseIntrinsic(s string) (*intrinsic, error) {
	p := &intrParser{src: s}
	call, err := p.call()
	if err != nil {
		return nil, fmt.Errorf("intrinsic function %q: %w", s, err)
	}
	p.skipSpace()
	if p.pos != len(p.src) {
		return nil, fmt.Errorf("intrinsic function %q: unexpected %q after the call", s, p.src[p.pos:])
	}
	return call, nil
}

type intrParser struct {
	src string
	pos int
}

func (p *intrParser) skipSpace() {
	for p.pos < len(p.src) && (p.src[p.pos] == ' ' || p.src[p.pos] == '\t' || p.src[p.pos] == '\n') {
		p.pos++
	}
}

func (p *intrParser) call() (*intrinsic, error) {
	start := p.pos
	for p.pos < len(p.src) && (isIdentByte(p.src[p.pos]) || p.src[p.pos] == '.') {
		p.pos++
	}
	name := p.src[start:p.pos]
	spec := specFor(name)
	if spec == nil {
		return nil, fmt.Errorf("unknown function %q", name)
	}
	if p.pos >= len(p.src) || p.src[p.pos] != '(' {
		return nil, fmt.Errorf("expected \"(\" after %s", name)
	}
	p.pos++
	in := &intrinsic{name: name, spec: spec}
	p.skipSpace()
	if p.pos < len(p.src) && p.src[p.pos] == ')' {
		p.pos++
	} else {
		for {
			p.skipSpace()
			a, err := p.arg()
			if err != nil {
				return nil, err
			}
			in.args = append(in.args, a)
			p.skipSpace()
			if p.pos >= len(p.src) {
				return nil, fmt.Errorf("missing \")\" to close %s", name)
			}
			if p.src[p.pos] == ',' {
				p.pos++
				continue
			}
			if p.src[p.pos] == ')' {
				p.pos++
				break
			}
			return nil, fmt.Errorf("unexpected %q in the arguments of %s", p.src[p.pos], name)
		}
	}
	if len(in.args) < spec.min || (spec.max >= 0 && len(in.args) > spec.max) {
		want := strconv.Itoa(spec.min)
		switch {
		case spec.max < 0:
			want = "at least " + want
		case spec.max != spec.min:
			want = fmt.Sprintf("%d to %d", spec.min, spec.max)
		}
		return nil, fmt.Errorf("%s takes %s argument(s), got %d", name, want, len(in.args))
	}
	return in, nil
}

func isIdentByte(b byte) bool {
	return b == '_' || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9')
}

func (p *intrParser) arg() (intrinsicArg, error) {
	if p.pos >= len(p.src) {
		return intrinsicArg{}, fmt.Errorf("missing argument")
	}
	rest := p.src[p.pos:]
	switch c := rest[0]; {
	case c == '\'':
		return p.str()
	case c == '$':
		return p.path()
	case strings.HasPrefix(rest, "States."):
		call, err := p.call()
		if err != nil {
			return intrinsicArg{}, err
		}
		return intrinsicArg{call: call}, nil
	case c == '-' || (c >= '0' && c <= '9'):
		end := p.pos
		for end < len(p.src) && strings.IndexByte("+-.eE0123456789", p.src[end]) >= 0 {
			end++
		}
		tok := p.src[p.pos:end]
		if _, err := strconv.ParseFloat(tok, 64); err != nil {
			return intrinsicArg{}, fmt.Errorf("bad number %q", tok)
		}
		p.pos = end
		return intrinsicArg{lit: numberValue(tok), raw: tok}, nil
	default:
		for _, kw := range []struct {
			s string
			v any
		}{{"null", nil}, {"true", true}, {"false", false}} {
			if strings.HasPrefix(rest, kw.s) && (len(rest) == len(kw.s) || !isIdentByte(rest[len(kw.s)])) {
				p.pos += len(kw.s)
				return intrinsicArg{lit: kw.v, raw: kw.s}, nil
			}
		}
		return intrinsicArg{}, fmt.Errorf("unexpected %q: an argument is a 'string', a number, true, false, null, a path or a States.* call", rest)
	}
}

func (p *intrParser) str() (intrinsicArg, error) {
	p.pos++ // opening quote
	var b strings.Builder
	escaped := false
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		switch c {
		case '\\':
			if p.pos+1 >= len(p.src) {
				return intrinsicArg{}, fmt.Errorf("string ends with a lone backslash")
			}
			n := p.src[p.pos+1]
			switch n {
			case '\'', '\\':
				b.WriteByte(n)
			case '{', '}':
				// Kept escaped: States.Format reads "\{" as a literal brace.
				b.WriteByte('\\')
				b.WriteByte(n)
				escaped = true
			default:
				return intrinsicArg{}, fmt.Errorf("unknown escape \\%c in string (use \\' \\\\ \\{ or \\})", n)
			}
			p.pos += 2
		case '\'':
			p.pos++
			s := b.String()
			if escaped {
				return intrinsicArg{lit: s, escaped: true}, nil
			}
			return intrinsicArg{lit: s}, nil
		default:
			b.WriteByte(c)
			p.pos++
		}
	}
	return intrinsicArg{}, fmt.Errorf("unterminated string")
}

func (p *intrParser) path() (intrinsicArg, error) {
	start := p.pos
	depth := 0
	var quote byte
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		if quote != 0 {
			if c == quote {
				quote = 0
			}
			p.pos++
			continue
		}
		if c == '\'' || c == '"' {
			quote = c
		} else if c == '[' || c == '(' {
			depth++
		} else if c == ']' || (c == ')' && depth > 0) {
			depth--
		} else if depth == 0 && (c == ',' || c == ')') {
			break
		}
		p.pos++
	}
	raw := strings.TrimSpace(p.src[start:p.pos])
	jp, err := compilePath(raw)
	if err != nil {
		return intrinsicArg{}, err
	}
	return intrinsicArg{path: jp, raw: raw}, nil
}

func (in *intrinsic) eval(env *evalEnv) (any, *stateError) {
	args := make([]any, len(in.args))
	for i, a := range in.args {
		switch {
		case a.call != nil:
			v, err := a.call.eval(env)
			if err != nil {
				return nil, err
			}
			args[i] = v
		case a.path != nil:
			v, ok := a.path.get(env.input, env.ctxObj)
			if !ok {
				return nil, intrinsicErr("%s: argument %d: path %s selects nothing in the input", in.name, i+1, a.path.raw)
			}
			args[i] = v
		default:
			if s, ok := a.lit.(string); ok && a.escaped && in.name != "States.Format" {
				args[i] = strings.NewReplacer(`\{`, "{", `\}`, "}").Replace(s)
			} else {
				args[i] = a.lit
			}
		}
	}
	return in.spec.fn(in.name, args, in.args, env)
}

func argString(name string, args []any, i int) (string, *stateError) {
	s, ok := args[i].(string)
	if !ok {
		return "", intrinsicErr("%s: argument %d must be a string, got %s", name, i+1, typeName(args[i]))
	}
	return s, nil
}

// firstArray returns the first argument, which must be an array (every array
// function takes the array first).
func firstArray(name string, args []any) ([]any, *stateError) {
	a, ok := args[0].([]any)
	if !ok {
		return nil, intrinsicErr("%s: argument 1 must be an array, got %s", name, typeName(args[0]))
	}
	return a, nil
}

func argInt(name string, args []any, i int) (int64, *stateError) {
	n, ok := toInt(args[i])
	if !ok {
		return 0, intrinsicErr("%s: argument %d must be an integer, got %s", name, i+1, typeName(args[i]))
	}
	return n, nil
}

func fnFormat(name string, args []any, _ []intrinsicArg, _ *evalEnv) (any, *stateError) {
	tmpl, err := argString(name, args, 0)
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	next := 1
	for i := 0; i < len(tmpl); i++ {
		c := tmpl[i]
		if c == '\\' && i+1 < len(tmpl) && (tmpl[i+1] == '{' || tmpl[i+1] == '}') {
			b.WriteByte(tmpl[i+1])
			i++
			continue
		}
		if c == '{' && i+1 < len(tmpl) && tmpl[i+1] == '}' {
			if next >= len(args) {
				return nil, intrinsicErr("%s: the template has more {} placeholders than the %d argument(s) given", name, len(args)-1)
			}
			switch v := args[next].(type) {
			case string:
				b.WriteString(v)
			case nil:
				b.WriteString("null")
			case bool, int64, float64:
				raw, _ := encodeJSON(v)
				b.Write(raw)
			default:
				return nil, intrinsicErr("%s: argument %d is a %s; only strings, numbers, booleans and null can be formatted", name, next+1, typeName(v))
			}
			next++
			i++
			continue
		}
		b.WriteByte(c)
	}
	if next != len(args) {
		return nil, intrinsicErr("%s: %d argument(s) given for %d {} placeholder(s)", name, len(args)-1, next-1)
	}
	return b.String(), nil
}

func fnStringToJSON(name string, args []any, _ []intrinsicArg, _ *evalEnv) (any, *stateError) {
	s, err := argString(name, args, 0)
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(s) == "" {
		return nil, intrinsicErr("%s: the string is empty, not JSON", name)
	}
	v, derr := decodeJSON([]byte(s))
	if derr != nil {
		return nil, intrinsicErr("%s: the string is not valid JSON: %v", name, derr)
	}
	return v, nil
}

func fnJSONToString(name string, args []any, _ []intrinsicArg, _ *evalEnv) (any, *stateError) {
	raw, err := encodeJSON(args[0])
	if err != nil {
		return nil, intrinsicErr("%s: %v", name, err)
	}
	return string(raw), nil
}

func fnArray(_ string, args []any, _ []intrinsicArg, _ *evalEnv) (any, *stateError) {
	out := make([]any, len(args))
	copy(out, args)
	return out, nil
}

func fnArrayPartition(name string, args []any, _ []intrinsicArg, _ *evalEnv) (any, *stateError) {
	arr, err := firstArray(name, args)
	if err != nil {
		return nil, err
	}
	size, err := argInt(name, args, 1)
	if err != nil {
		return nil, err
	}
	if size <= 0 {
		return nil, intrinsicErr("%s: chunk size must be positive, got %d", name, size)
	}
	out := []any{}
	for i := 0; i < len(arr); i += int(size) {
		end := min(i+int(size), len(arr))
		chunk := make([]any, end-i)
		copy(chunk, arr[i:end])
		out = append(out, chunk)
	}
	return out, nil
}

func fnArrayContains(name string, args []any, _ []intrinsicArg, _ *evalEnv) (any, *stateError) {
	arr, err := firstArray(name, args)
	if err != nil {
		return nil, err
	}
	for _, e := range arr {
		if jsonEqual(e, args[1]) {
			return true, nil
		}
	}
	return false, nil
}

const maxArrayRange = 1000

func fnArrayRange(name string, args []any, _ []intrinsicArg, _ *evalEnv) (any, *stateError) {
	var n [3]int64
	for i := range n {
		v, err := argInt(name, args, i)
		if err != nil {
			return nil, err
		}
		n[i] = v
	}
	start, end, step := n[0], n[1], n[2]
	if step == 0 {
		return nil, intrinsicErr("%s: step must not be 0", name)
	}
	out := []any{}
	for v := start; (step > 0 && v <= end) || (step < 0 && v >= end); v += step {
		if len(out) == maxArrayRange {
			return nil, intrinsicErr("%s: the range has more than %d elements", name, maxArrayRange)
		}
		out = append(out, v)
	}
	return out, nil
}

func fnArrayGetItem(name string, args []any, _ []intrinsicArg, _ *evalEnv) (any, *stateError) {
	arr, err := firstArray(name, args)
	if err != nil {
		return nil, err
	}
	i, err := argInt(name, args, 1)
	if err != nil {
		return nil, err
	}
	if i < 0 || i >= int64(len(arr)) {
		return nil, intrinsicErr("%s: index %d is out of range for an array of %d", name, i, len(arr))
	}
	return arr[i], nil
}

func fnArrayLength(name string, args []any, _ []intrinsicArg, _ *evalEnv) (any, *stateError) {
	arr, err := firstArray(name, args)
	if err != nil {
		return nil, err
	}
	return int64(len(arr)), nil
}

func fnArrayUnique(name string, args []any, _ []intrinsicArg, _ *evalEnv) (any, *stateError) {
	arr, err := firstArray(name, args)
	if err != nil {
		return nil, err
	}
	out := []any{}
	for _, e := range arr {
		dup := false
		for _, o := range out {
			if jsonEqual(e, o) {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, e)
		}
	}
	return out, nil
}

const maxBase64Input = 10000

func fnBase64Encode(name string, args []any, _ []intrinsicArg, _ *evalEnv) (any, *stateError) {
	s, err := argString(name, args, 0)
	if err != nil {
		return nil, err
	}
	if len(s) > maxBase64Input {
		return nil, intrinsicErr("%s: input is longer than %d characters", name, maxBase64Input)
	}
	return base64.StdEncoding.EncodeToString([]byte(s)), nil
}

func fnBase64Decode(name string, args []any, _ []intrinsicArg, _ *evalEnv) (any, *stateError) {
	s, err := argString(name, args, 0)
	if err != nil {
		return nil, err
	}
	if len(s) > maxBase64Input {
		return nil, intrinsicErr("%s: input is longer than %d characters", name, maxBase64Input)
	}
	b, derr := base64.StdEncoding.DecodeString(s)
	if derr != nil {
		return nil, intrinsicErr("%s: not valid base64: %v", name, derr)
	}
	return string(b), nil
}

func fnHash(name string, args []any, _ []intrinsicArg, _ *evalEnv) (any, *stateError) {
	data, err := argString(name, args, 0)
	if err != nil {
		return nil, err
	}
	alg, err := argString(name, args, 1)
	if err != nil {
		return nil, err
	}
	var h hash.Hash
	switch alg {
	case "MD5":
		h = md5.New()
	case "SHA-1":
		h = sha1.New()
	case "SHA-256":
		h = sha256.New()
	case "SHA-384":
		h = sha512.New384()
	case "SHA-512":
		h = sha512.New()
	default:
		return nil, intrinsicErr("%s: unknown algorithm %q (use MD5, SHA-1, SHA-256, SHA-384 or SHA-512)", name, alg)
	}
	h.Write([]byte(data))
	return hex.EncodeToString(h.Sum(nil)), nil
}

func fnJSONMerge(name string, args []any, _ []intrinsicArg, _ *evalEnv) (any, *stateError) {
	a, ok1 := args[0].(map[string]any)
	b, ok2 := args[1].(map[string]any)
	if !ok1 || !ok2 {
		return nil, intrinsicErr("%s: both values to merge must be objects, got %s and %s", name, typeName(args[0]), typeName(args[1]))
	}
	deep, ok := args[2].(bool)
	if !ok {
		return nil, intrinsicErr("%s: argument 3 must be a boolean", name)
	}
	if deep {
		return nil, intrinsicErr("%s: only shallow merge (false) is supported, as in Step Functions", name)
	}
	out := make(map[string]any, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out, nil
}

func fnMathRandom(name string, args []any, _ []intrinsicArg, env *evalEnv) (any, *stateError) {
	start, err := argInt(name, args, 0)
	if err != nil {
		return nil, err
	}
	end, err := argInt(name, args, 1)
	if err != nil {
		return nil, err
	}
	if end <= start {
		return nil, intrinsicErr("%s: end (%d) must be greater than start (%d)", name, end, start)
	}
	var f float64
	if len(args) == 3 {
		seed, err := argInt(name, args, 2)
		if err != nil {
			return nil, err
		}
		f = rand.New(rand.NewPCG(uint64(seed), 0)).Float64()
	} else {
		f = env.rand()
	}
	return start + int64(math.Floor(f*float64(end-start))), nil
}

func fnMathAdd(name string, args []any, _ []intrinsicArg, _ *evalEnv) (any, *stateError) {
	a, err := argInt(name, args, 0)
	if err != nil {
		return nil, err
	}
	b, err := argInt(name, args, 1)
	if err != nil {
		return nil, err
	}
	return a + b, nil
}

func fnStringSplit(name string, args []any, _ []intrinsicArg, _ *evalEnv) (any, *stateError) {
	s, err := argString(name, args, 0)
	if err != nil {
		return nil, err
	}
	delims, err := argString(name, args, 1)
	if err != nil {
		return nil, err
	}
	out := []any{}
	for _, part := range strings.FieldsFunc(s, func(r rune) bool { return strings.ContainsRune(delims, r) }) {
		out = append(out, part)
	}
	return out, nil
}

func fnUUID(_ string, _ []any, _ []intrinsicArg, env *evalEnv) (any, *stateError) {
	var b [16]byte
	for i := 0; i < 16; i += 4 {
		v := uint32(env.rand() * (1 << 32))
		b[i], b[i+1], b[i+2], b[i+3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}

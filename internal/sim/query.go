package sim

import (
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// form reads AWS Query request parameters. Auto Scaling lists are "Name.member.N",
// EC2 lists are "Name.N"; structures nest with dots ("Filter.1.Value.2").
type form struct {
	v      url.Values
	prefix string
	body   []byte // raw body, for JSON-protocol services
}

func newForm(v url.Values) form { return form{v: v} }

func (f form) key(name string) string { return f.prefix + name }

func (f form) str(name string) string { return f.v.Get(f.key(name)) }

func (f form) has(name string) bool { _, ok := f.v[f.key(name)]; return ok }

// intOpt returns the integer value of name, ok=false when absent; err when not a number.
func (f form) intOpt(name string) (n int, ok bool, err error) {
	s := f.str(name)
	if s == "" {
		return 0, false, nil
	}
	n, err = strconv.Atoi(s)
	return n, true, err
}

func (f form) boolOpt(name string) (b bool, ok bool) {
	s := f.str(name)
	if s == "" {
		return false, false
	}
	return strings.EqualFold(s, "true"), true
}

// indices returns the sorted N of every "<name>.N…" key.
func (f form) indices(name string) []int {
	p := f.key(name) + "."
	seen := map[int]bool{}
	for k := range f.v {
		if !strings.HasPrefix(k, p) {
			continue
		}
		rest := k[len(p):]
		if i := strings.IndexByte(rest, '.'); i >= 0 {
			rest = rest[:i]
		}
		if n, err := strconv.Atoi(rest); err == nil {
			seen[n] = true
		}
	}
	out := make([]int, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Ints(out)
	return out
}

// list returns the scalar list "<name>.N" (EC2 style) in index order.
func (f form) list(name string) []string {
	var out []string
	for _, n := range f.indices(name) {
		if s, ok := f.v[f.key(name)+"."+strconv.Itoa(n)]; ok && len(s) > 0 {
			out = append(out, s[0])
		}
	}
	return out
}

// members returns the Auto Scaling style list "<name>.member.N".
func (f form) members(name string) []string { return f.list(name + ".member") }

// structs returns sub-forms for "<name>.N.*" (EC2) entries.
func (f form) structs(name string) []form {
	var out []form
	for _, n := range f.indices(name) {
		out = append(out, form{v: f.v, prefix: f.key(name) + "." + strconv.Itoa(n) + "."})
	}
	return out
}

// memberStructs returns sub-forms for "<name>.member.N.*" (Auto Scaling).
func (f form) memberStructs(name string) []form { return f.structs(name + ".member") }

// sub returns the nested structure "<name>.*".
func (f form) sub(name string) form { return form{v: f.v, prefix: f.key(name) + "."} }

// any reports whether any key starts with the sub-form's prefix.
func (f form) any() bool {
	for k := range f.v {
		if strings.HasPrefix(k, f.prefix) {
			return true
		}
	}
	return false
}

package config

import (
	"strconv"
	"strings"
)

// layout records the line on which each key of a TOML document is defined,
// so that errors found after decoding (a bad CIDR, a missing file) can point
// at the line the user has to edit. BurntSushi/toml v1.6 keeps key positions
// to itself (MetaData.keyInfo is unexported, and holds only the last element
// of an array of tables), hence this scanner.
//
// Paths are dotted keys with zero-based indices for arrays and arrays of
// tables: "policy.rule[1].targets" is the targets key of the second
// [[policy.rule]], "policy.rule[1].targets[2]" its third element.
type layout struct {
	lines map[string]int    // path -> line (1-based) where it first appears
	first map[string]string // path without indices -> first indexed path
}

// line returns the line of path, or of its nearest recorded ancestor, or 0.
func (l *layout) line(path string) int {
	for path != "" {
		if n, ok := l.lines[path]; ok {
			return n
		}
		path = parentPath(path)
	}
	return 0
}

// parentPath drops the last ".key" or "[i]" of a path.
func parentPath(path string) string {
	if strings.HasSuffix(path, "]") {
		if i := strings.LastIndexByte(path, '['); i >= 0 {
			return path[:i]
		}
	}
	// A quoted key may contain dots; this is for error positions only, so
	// landing on a line near the right one is acceptable.
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i]
	}
	return ""
}

// stripIndices turns "policy.rule[1].targets[0]" into "policy.rule.targets".
func stripIndices(path string) string {
	if !strings.Contains(path, "[") {
		return path
	}
	var b strings.Builder
	depth := 0
	inQuote := false
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c == '"':
			inQuote = !inQuote
		case c == '\\' && inQuote && i+1 < len(path):
			if depth == 0 {
				b.WriteByte(c)
			}
			i++
			c = path[i]
		case c == '[' && !inQuote:
			depth++
			continue
		case c == ']' && !inQuote:
			depth--
			continue
		}
		if depth == 0 {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// keyPart renders one key component the way paths spell it: bare when it
// can be, quoted otherwise.
func keyPart(k string) string {
	if k == "" {
		return `""`
	}
	for _, r := range k {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return strconv.Quote(k)
		}
	}
	return k
}

func joinPath(base, part string) string {
	if base == "" {
		return keyPart(part)
	}
	return base + "." + keyPart(part)
}

func indexPath(base string, i int) string { return base + "[" + strconv.Itoa(i) + "]" }

// scanLayout scans a document that the TOML parser has already accepted. It
// never fails: on anything it does not understand it moves to the next line.
func scanLayout(data []byte) *layout {
	sc := &scanner{
		s:      data,
		line:   1,
		l:      &layout{lines: make(map[string]int), first: make(map[string]string)},
		arrays: make(map[string]int),
	}
	sc.document()
	return sc.l
}

type scanner struct {
	s      []byte
	i      int
	line   int
	l      *layout
	arrays map[string]int // array-of-tables path (parents indexed) -> elements seen
	table  string         // indexed path of the current table
}

func (sc *scanner) record(path string) {
	if _, ok := sc.l.lines[path]; !ok {
		sc.l.lines[path] = sc.line
	}
	plain := stripIndices(path)
	if _, ok := sc.l.first[plain]; !ok {
		sc.l.first[plain] = path
	}
}

func (sc *scanner) peek(off int) byte {
	if sc.i+off < len(sc.s) {
		return sc.s[sc.i+off]
	}
	return 0
}

func (sc *scanner) eof() bool { return sc.i >= len(sc.s) }

// advance moves one byte, counting lines.
func (sc *scanner) advance() {
	if sc.s[sc.i] == '\n' {
		sc.line++
	}
	sc.i++
}

func (sc *scanner) skipSpace() {
	for !sc.eof() && (sc.s[sc.i] == ' ' || sc.s[sc.i] == '\t') {
		sc.i++
	}
}

// skipBlank skips spaces, newlines and comments (inside arrays).
func (sc *scanner) skipBlank() {
	for !sc.eof() {
		switch sc.s[sc.i] {
		case ' ', '\t', '\r', '\n':
			sc.advance()
		case '#':
			sc.skipLine()
		default:
			return
		}
	}
}

// skipLine moves to the newline ending the current line (not past it).
func (sc *scanner) skipLine() {
	for !sc.eof() && sc.s[sc.i] != '\n' {
		sc.i++
	}
}

func (sc *scanner) document() {
	for !sc.eof() {
		start := sc.i
		sc.skipSpace()
		if sc.eof() {
			return
		}
		switch sc.s[sc.i] {
		case '\n', '\r':
			sc.advance()
		case '#':
			sc.skipLine()
		case '[':
			sc.header()
			sc.skipLine()
		default:
			sc.keyValue(sc.table)
			sc.skipLine()
		}
		if sc.i == start {
			sc.advance()
		}
	}
}

func (sc *scanner) header() {
	array := sc.peek(1) == '['
	if array {
		sc.i += 2
	} else {
		sc.i++
	}
	parts := sc.key()
	if len(parts) == 0 {
		return
	}
	path := ""
	for j, p := range parts {
		path = joinPath(path, p)
		if j == len(parts)-1 {
			break
		}
		if n := sc.arrays[path]; n > 0 {
			path = indexPath(path, n-1)
		}
	}
	if array {
		n := sc.arrays[path]
		sc.arrays[path] = n + 1
		sc.record(path)
		path = indexPath(path, n)
	}
	sc.record(path)
	sc.table = path
}

// key reads a possibly dotted, possibly quoted key and returns its parts.
func (sc *scanner) key() []string {
	var parts []string
	for {
		sc.skipSpace()
		if sc.eof() {
			return parts
		}
		switch c := sc.s[sc.i]; {
		case c == '"':
			parts = append(parts, sc.quotedKey('"'))
		case c == '\'':
			parts = append(parts, sc.quotedKey('\''))
		case isBare(c):
			start := sc.i
			for !sc.eof() && isBare(sc.s[sc.i]) {
				sc.i++
			}
			parts = append(parts, string(sc.s[start:sc.i]))
		default:
			return parts
		}
		sc.skipSpace()
		if sc.peek(0) != '.' {
			return parts
		}
		sc.i++
	}
}

func isBare(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

func (sc *scanner) quotedKey(q byte) string {
	start := sc.i
	sc.i++
	for !sc.eof() && sc.s[sc.i] != q && sc.s[sc.i] != '\n' {
		if q == '"' && sc.s[sc.i] == '\\' {
			sc.i++
		}
		sc.i++
	}
	if sc.eof() || sc.s[sc.i] != q {
		return string(sc.s[start+1 : sc.i])
	}
	sc.i++
	raw := string(sc.s[start:sc.i])
	if q == '\'' {
		return raw[1 : len(raw)-1]
	}
	if s, err := strconv.Unquote(raw); err == nil {
		return s
	}
	return raw[1 : len(raw)-1]
}

// keyValue reads `key = value` relative to base.
func (sc *scanner) keyValue(base string) {
	parts := sc.key()
	if len(parts) == 0 {
		return
	}
	path := base
	for _, p := range parts {
		path = joinPath(path, p)
		sc.record(path)
	}
	sc.skipSpace()
	if sc.peek(0) != '=' {
		return
	}
	sc.i++
	sc.skipSpace()
	sc.value(path)
}

func (sc *scanner) value(path string) {
	if sc.eof() {
		return
	}
	switch sc.s[sc.i] {
	case '"':
		if sc.peek(1) == '"' && sc.peek(2) == '"' {
			sc.multiline('"')
		} else {
			sc.quotedKey('"')
		}
	case '\'':
		if sc.peek(1) == '\'' && sc.peek(2) == '\'' {
			sc.multiline('\'')
		} else {
			sc.quotedKey('\'')
		}
	case '[':
		sc.i++
		for n := 0; ; n++ {
			sc.skipBlank()
			if sc.eof() || sc.s[sc.i] == ']' {
				break
			}
			start := sc.i
			elem := indexPath(path, n)
			sc.record(elem)
			sc.value(elem)
			sc.skipBlank()
			if sc.peek(0) == ',' {
				sc.i++
			} else if sc.i == start {
				break // not a value we understand; give up on this array
			}
		}
		if !sc.eof() && sc.s[sc.i] == ']' {
			sc.i++
		}
	case '{':
		sc.i++
		for {
			sc.skipBlank()
			if sc.eof() || sc.s[sc.i] == '}' {
				break
			}
			start := sc.i
			sc.keyValue(path)
			sc.skipBlank()
			if sc.peek(0) == ',' {
				sc.i++
			} else if sc.i == start {
				break
			}
		}
		if !sc.eof() && sc.s[sc.i] == '}' {
			sc.i++
		}
	default:
		// Numbers, booleans, dates: up to a delimiter.
		for !sc.eof() && !strings.ContainsRune(",]}#\r\n", rune(sc.s[sc.i])) {
			sc.i++
		}
	}
}

// multiline skips a multi-line string (three quote characters, double or
// single), which may span lines and end with up to two extra quotes.
func (sc *scanner) multiline(q byte) {
	sc.i += 3
	for !sc.eof() {
		c := sc.s[sc.i]
		if c == '\\' && q == '"' {
			sc.advance()
			if !sc.eof() {
				sc.advance()
			}
			continue
		}
		if c == q && sc.peek(1) == q && sc.peek(2) == q {
			sc.i += 3
			for n := 0; n < 2 && sc.peek(0) == q; n++ {
				sc.i++
			}
			return
		}
		sc.advance()
	}
}

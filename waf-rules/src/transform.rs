//! Transformations (`t:...`), byte in, bytes out, as ModSecurity documents them.

/// One transformation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transform {
    /// `urlDecodeUni`: `%XX`, `%uXXXX` and `+`.
    UrlDecodeUni,
    /// `urlDecode`: `%XX` and `+`.
    UrlDecode,
    /// `lowercase` (ASCII).
    Lowercase,
    /// `uppercase` (ASCII).
    Uppercase,
    /// `jsDecode`: JavaScript escapes.
    JsDecode,
    /// `htmlEntityDecode`.
    HtmlEntityDecode,
    /// `utf8toUnicode`: multi-byte UTF-8 → `%uHHHH`.
    Utf8ToUnicode,
    /// `removeNulls`.
    RemoveNulls,
    /// `replaceNulls`: NUL → space.
    ReplaceNulls,
    /// `cssDecode`: CSS 2 escapes.
    CssDecode,
    /// `cmdLine`: Windows/Unix command-line normalisation.
    CmdLine,
    /// `removeWhitespace`.
    RemoveWhitespace,
    /// `compressWhitespace`.
    CompressWhitespace,
    /// `replaceComments`: `/* ... */` → one space.
    ReplaceComments,
    /// `removeComments`.
    RemoveComments,
    /// `removeCommentsChar`: drops `/*`, `*/`, `--` and `#`.
    RemoveCommentsChar,
    /// `normalizePath`.
    NormalizePath,
    /// `normalizePathWin`: `\` → `/`, then `normalizePath`.
    NormalizePathWin,
    /// `escapeSeqDecode`: ANSI C escapes.
    EscapeSeqDecode,
    /// `length`: the decimal length.
    Length,
    /// `base64Decode`.
    Base64Decode,
    /// `base64DecodeExt`: skips invalid characters.
    Base64DecodeExt,
    /// `sha1`: the raw 20-byte digest.
    Sha1,
    /// `hexEncode`.
    HexEncode,
    /// `hexDecode`.
    HexDecode,
    /// `trim`.
    Trim,
    /// `trimLeft`.
    TrimLeft,
    /// `trimRight`.
    TrimRight,
}

impl Transform {
    /// Looks up a transformation by its SecLang name (case-insensitive). `none` is not a
    /// transformation (it resets the list) and returns `None`, as do unknown names.
    pub fn from_name(name: &str) -> Option<Transform> {
        Some(match name.to_ascii_lowercase().as_str() {
            "urldecodeuni" => Transform::UrlDecodeUni,
            "urldecode" => Transform::UrlDecode,
            "lowercase" => Transform::Lowercase,
            "uppercase" => Transform::Uppercase,
            "jsdecode" => Transform::JsDecode,
            "htmlentitydecode" => Transform::HtmlEntityDecode,
            "utf8tounicode" => Transform::Utf8ToUnicode,
            "removenulls" => Transform::RemoveNulls,
            "replacenulls" => Transform::ReplaceNulls,
            "cssdecode" => Transform::CssDecode,
            "cmdline" => Transform::CmdLine,
            "removewhitespace" => Transform::RemoveWhitespace,
            "compresswhitespace" => Transform::CompressWhitespace,
            "replacecomments" => Transform::ReplaceComments,
            "removecomments" => Transform::RemoveComments,
            "removecommentschar" => Transform::RemoveCommentsChar,
            "normalizepath" | "normalisepath" => Transform::NormalizePath,
            "normalizepathwin" | "normalisepathwin" => Transform::NormalizePathWin,
            "escapeseqdecode" => Transform::EscapeSeqDecode,
            "length" => Transform::Length,
            "base64decode" => Transform::Base64Decode,
            "base64decodeext" => Transform::Base64DecodeExt,
            "sha1" => Transform::Sha1,
            "hexencode" => Transform::HexEncode,
            "hexdecode" => Transform::HexDecode,
            "trim" => Transform::Trim,
            "trimleft" => Transform::TrimLeft,
            "trimright" => Transform::TrimRight,
            _ => return None,
        })
    }

    /// Whether applying the transformation would leave `input` unchanged (so a caller can
    /// skip the copy). Never claims a no-op wrongly; may miss some.
    pub fn is_noop(self, input: &[u8]) -> bool {
        self.noop_by_flags(byte_flags(input))
            .unwrap_or_else(|| self.noop_by_bytes(input))
    }

    /// [`Transform::is_noop`] where the [`byte_flags`] of the input did not decide it (a path
    /// normalisation of a value with a `/`): reads the bytes.
    pub fn noop_by_bytes(self, input: &[u8]) -> bool {
        match self {
            Transform::NormalizePath => path_is_normal(input),
            Transform::NormalizePathWin => !input.contains(&b'\\') && path_is_normal(input),
            _ => false,
        }
    }

    /// [`Transform::is_noop`] from the [`byte_flags`] of the input alone, where they decide
    /// it (`None` when a path normalisation must look at the bytes).
    pub fn noop_by_flags(self, f: u32) -> Option<bool> {
        match self.change_mask() {
            Some(m) if f & m == 0 => Some(true),
            Some(_) if matches!(self, Transform::NormalizePath | Transform::NormalizePathWin) => {
                None
            }
            _ => Some(false),
        }
    }

    /// The [`flags`] without any of which in its input the transformation changes nothing
    /// (`None`: it may change any input, as `length` or `base64Decode` do). A chain of steps
    /// leaves a value as it is when the value has none of the flags of any step: each step
    /// then returns its input, flags and all.
    pub fn change_mask(self) -> Option<u32> {
        use flags::*;
        Some(match self {
            Transform::UrlDecodeUni | Transform::UrlDecode => PCT_PLUS,
            Transform::Lowercase => UPPER,
            Transform::Uppercase => LOWER,
            Transform::JsDecode | Transform::CssDecode | Transform::EscapeSeqDecode => BSLASH,
            Transform::HtmlEntityDecode => AMP,
            Transform::Utf8ToUnicode => NON_ASCII,
            Transform::RemoveNulls | Transform::ReplaceNulls => NUL,
            Transform::RemoveWhitespace => SPACE,
            Transform::CompressWhitespace => ODD_SPACE | DOUBLE_SPACE,
            Transform::ReplaceComments | Transform::RemoveCommentsChar => COMMENT,
            // cmdLine deletes quotes, `\` and `^`, folds `,` `;` and whitespace runs into one
            // space (dropped before `/` and `(`) and lower-cases: none of those, no change.
            Transform::CmdLine => CMDLINE | UPPER,
            Transform::Trim => TRIM_EDGE,
            // One segment that is not `.` alone: nothing to normalise.
            Transform::NormalizePath => SLASH,
            Transform::NormalizePathWin => SLASH | BSLASH,
            _ => return None,
        })
    }

    /// As [`Transform::change_mask`], leaving out changes of ASCII case (a case-folding
    /// search sees none): `lowercase` counts for nothing and `cmdLine` only for the bytes it
    /// deletes or folds. No other step's mask holds [`flags::LOWER`] or [`flags::UPPER`], so
    /// a value that is only lower-cased on the way keeps every other step's mask clear and
    /// leaves a chain equal to its input but for case. `uppercase` (which would make small
    /// letters into capitals a later step might read) counts as changing any value.
    pub fn scan_change_mask(self) -> Option<u32> {
        match self {
            Transform::Lowercase => Some(0),
            Transform::CmdLine => Some(flags::CMDLINE),
            Transform::Uppercase => None,
            t => t.change_mask(),
        }
    }

    /// Whether the output is never longer than the input, for any input (decoders turn each
    /// escape into at most as many bytes as it had; the others delete, fold or keep bytes).
    /// The prefilter skips a value shorter than every literal of a chain made of such steps.
    pub fn never_lengthens(self) -> bool {
        !matches!(
            self,
            Transform::Utf8ToUnicode | Transform::Length | Transform::Sha1 | Transform::HexEncode
        )
    }

    /// The length of what `base64Decode` makes of `input`: it decodes the leading run of
    /// alphabet bytes (to the first `=` or other byte), six bits each, whole bytes out.
    pub fn base64_decoded_len(input: &[u8]) -> usize {
        let run = input
            .iter()
            .position(|&b| B64_VALUE[b as usize] >= 64)
            .unwrap_or(input.len());
        run * 6 / 8
    }

    /// Applies the transformation.
    pub fn apply(self, input: &[u8]) -> Vec<u8> {
        match self {
            Transform::UrlDecodeUni => url_decode(input, true),
            Transform::UrlDecode => url_decode(input, false),
            Transform::Lowercase => input.to_ascii_lowercase(),
            Transform::Uppercase => input.to_ascii_uppercase(),
            Transform::JsDecode => js_decode(input),
            Transform::HtmlEntityDecode => html_entity_decode(input),
            Transform::Utf8ToUnicode => utf8_to_unicode(input),
            Transform::RemoveNulls => without(input, |b| b == 0),
            Transform::ReplaceNulls => input
                .iter()
                .map(|&b| if b == 0 { b' ' } else { b })
                .collect(),
            Transform::CssDecode => css_decode(input),
            Transform::CmdLine => cmd_line(input),
            Transform::RemoveWhitespace => without(input, is_space),
            Transform::CompressWhitespace => compress_whitespace(input),
            Transform::ReplaceComments => replace_comments(input),
            Transform::RemoveComments => remove_comments(input),
            Transform::RemoveCommentsChar => remove_comments_char(input),
            Transform::NormalizePath => normalize_path(input, false),
            Transform::NormalizePathWin => normalize_path(input, true),
            Transform::EscapeSeqDecode => escape_seq_decode(input),
            Transform::Length => input.len().to_string().into_bytes(),
            Transform::Base64Decode => base64_decode(input, false),
            Transform::Base64DecodeExt => base64_decode(input, true),
            Transform::Sha1 => sha1_smol::Sha1::from(input).digest().bytes().to_vec(),
            Transform::HexEncode => {
                let mut s = Vec::with_capacity(input.len() * 2);
                for &b in input {
                    s.push(HEX[(b >> 4) as usize]);
                    s.push(HEX[(b & 15) as usize]);
                }
                s
            }
            Transform::HexDecode => {
                let mut out = Vec::with_capacity(input.len() / 2);
                for pair in input.chunks(2) {
                    if let [a, b] = pair {
                        if let (Some(h), Some(l)) = (hexval(*a), hexval(*b)) {
                            out.push(h << 4 | l);
                        }
                    }
                }
                out
            }
            Transform::Trim => trim(input, true, true),
            Transform::TrimLeft => trim(input, true, false),
            Transform::TrimRight => trim(input, false, true),
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hexval(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// What [`byte_flags`] reports about a value.
pub mod flags {
    /// `%` or `+`.
    pub const PCT_PLUS: u32 = 1;
    /// An ASCII capital.
    pub const UPPER: u32 = 1 << 1;
    /// An ASCII small letter.
    pub const LOWER: u32 = 1 << 2;
    /// A backslash.
    pub const BSLASH: u32 = 1 << 3;
    /// `&`.
    pub const AMP: u32 = 1 << 4;
    /// A byte above 0x7f.
    pub const NON_ASCII: u32 = 1 << 5;
    /// A NUL byte.
    pub const NUL: u32 = 1 << 6;
    /// Whitespace as `removeWhitespace` sees it.
    pub const SPACE: u32 = 1 << 7;
    /// Whitespace other than a plain space.
    pub const ODD_SPACE: u32 = 1 << 8;
    /// Two spaces in a row.
    pub const DOUBLE_SPACE: u32 = 1 << 9;
    /// `*`, `-` or `#` (comment syntax).
    pub const COMMENT: u32 = 1 << 10;
    /// A byte `cmdLine` deletes or folds: quotes, `\`, `^`, `,`, `;`, space, tab, CR, LF.
    pub const CMDLINE: u32 = 1 << 11;
    /// Whitespace (or 0x0b) at either end, which `trim` removes.
    pub const TRIM_EDGE: u32 = 1 << 12;
    /// A `/`, or the value is `.` alone: what a path normalisation can change.
    pub const SLASH: u32 = 1 << 13;
    /// A control byte (below 0x20, or 0x7f).
    pub const CTRL: u32 = 1 << 14;
    /// A [`crate::prefilter::marked_byte`].
    pub const MARKED: u32 = 1 << 15;
}

/// Each byte's [`flags`] classes.
static CLASS: [u16; 256] = {
    use flags::*;
    {
        let mut t = [0u16; 256];
        let mut b = 0;
        while b < 256 {
            let c = b as u8;
            let mut f = 0u32;
            if c == b'%' || c == b'+' {
                f |= PCT_PLUS;
            }
            if c.is_ascii_uppercase() {
                f |= UPPER;
            }
            if c.is_ascii_lowercase() {
                f |= LOWER;
            }
            if c == b'\\' {
                f |= BSLASH;
            }
            if c == b'&' {
                f |= AMP;
            }
            if c >= 0x80 {
                f |= NON_ASCII;
            }
            if c == 0 {
                f |= NUL;
            }
            if is_space(c) {
                f |= SPACE;
                if c != b' ' {
                    f |= ODD_SPACE;
                }
            }
            if c == b'*' || c == b'-' || c == b'#' {
                f |= COMMENT;
            }
            if matches!(
                c,
                b'"' | b'\'' | b'\\' | b'^' | b',' | b';' | b' ' | b'\t' | b'\r' | b'\n'
            ) {
                f |= CMDLINE;
            }
            if c == b'/' {
                f |= SLASH;
            }
            if c < 0x20 || c == 0x7f {
                f |= CTRL;
            }
            if crate::prefilter::is_marked_byte(c) {
                f |= MARKED;
            }
            t[b] = f as u16;
            b += 1;
        }
        t
    }
};

/// The [`flags`] classes byte `b` belongs to (a value's flags hold those of each of its bytes).
pub fn byte_class(b: u8) -> u32 {
    u32::from(CLASS[b as usize])
}

/// The [`flags`] of a value, in one pass.
pub fn byte_flags(input: &[u8]) -> u32 {
    use flags::*;
    // Four bytes a step into four accumulators: the lookups do not wait on each other.
    let mut acc = [0u16; 4];
    let mut quads = input.chunks_exact(4);
    for q in &mut quads {
        for (a, &b) in acc.iter_mut().zip(q) {
            *a |= CLASS[b as usize];
        }
    }
    let mut f = u32::from(acc[0] | acc[1] | acc[2] | acc[3]);
    for &b in quads.remainder() {
        f |= u32::from(CLASS[b as usize]);
    }
    if f & SPACE != 0 && memchr::memmem::find(input, b"  ").is_some() {
        f |= DOUBLE_SPACE;
    }
    let edge = |b: &u8| matches!(*b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    if input.first().is_some_and(edge) || input.last().is_some_and(edge) {
        f |= TRIM_EDGE;
    }
    if input == b"." {
        f |= SLASH;
    }
    f
}

/// `input` without the bytes `drop` selects, in one allocation of the input's size, copied a
/// run at a time (a value seldom holds many: a byte-at-a-time filter cost removeWhitespace 2 %
/// of a legit-dev request).
fn without(input: &[u8], drop: impl Fn(u8) -> bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.iter().position(|&b| drop(b)) {
        out.extend_from_slice(&rest[..i]);
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    out
}

/// The bytes `is_space` accepts.
const SPACE_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = matches!(b as u8, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | 0xa0);
        b += 1;
    }
    t
};

const fn is_space(b: u8) -> bool {
    SPACE_BYTES[b as usize]
}

fn trim(input: &[u8], left: bool, right: bool) -> Vec<u8> {
    let ws = |b: &u8| matches!(*b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let mut s = 0;
    let mut e = input.len();
    if left {
        while s < e && ws(&input[s]) {
            s += 1;
        }
    }
    if right {
        while e > s && ws(&input[e - 1]) {
            e -= 1;
        }
    }
    input[s..e].to_vec()
}

/// A `%uXXXX` / `\uXXXX` code point reduced to one byte as ModSecurity does without a
/// unicode map: full-width ASCII (U+FF01..U+FF5E) becomes ASCII, anything else its low byte.
fn unicode_to_byte(cp: u32) -> u8 {
    if (0xff01..=0xff5e).contains(&cp) {
        (cp - 0xfee0) as u8
    } else {
        (cp & 0xff) as u8
    }
}

fn hex4(input: &[u8], at: usize) -> Option<u32> {
    let s = input.get(at..at + 4)?;
    let mut v = 0u32;
    for &b in s {
        v = v << 4 | u32::from(hexval(b)?);
    }
    Some(v)
}

fn url_decode(input: &[u8], uni: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        // The bytes up to the next `%` or `+` stay as they are: copied as one run.
        let run = memchr::memchr2(b'%', b'+', &input[i..]).unwrap_or(input.len() - i);
        out.extend_from_slice(&input[i..i + run]);
        i += run;
        if i == input.len() {
            break;
        }
        let b = input[i];
        if b == b'%' {
            if uni && matches!(input.get(i + 1), Some(b'u' | b'U')) {
                if let Some(cp) = hex4(input, i + 2) {
                    out.push(unicode_to_byte(cp));
                    i += 6;
                    continue;
                }
            }
            if let (Some(h), Some(l)) = (
                input.get(i + 1).and_then(|&c| hexval(c)),
                input.get(i + 2).and_then(|&c| hexval(c)),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
            out.push(b);
        } else if b == b'+' {
            out.push(b' ');
        } else {
            out.push(b);
        }
        i += 1;
    }
    out
}

fn js_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'\\' || i + 1 >= input.len() {
            out.push(input[i]);
            i += 1;
            continue;
        }
        let c = input[i + 1];
        match c {
            b'u' | b'U' => {
                if let Some(cp) = hex4(input, i + 2) {
                    out.push(unicode_to_byte(cp));
                    i += 6;
                    continue;
                }
                out.push(c);
                i += 2;
            }
            b'x' | b'X' => {
                if let (Some(h), Some(l)) = (
                    input.get(i + 2).and_then(|&c| hexval(c)),
                    input.get(i + 3).and_then(|&c| hexval(c)),
                ) {
                    out.push(h << 4 | l);
                    i += 4;
                    continue;
                }
                out.push(c);
                i += 2;
            }
            b'0'..=b'7' => {
                let mut v: u32 = 0;
                let mut j = i + 1;
                while j < input.len() && j < i + 4 && (b'0'..=b'7').contains(&input[j]) {
                    let nv = v * 8 + u32::from(input[j] - b'0');
                    if nv > 0xff {
                        break;
                    }
                    v = nv;
                    j += 1;
                }
                out.push(v as u8);
                i = j;
            }
            _ => {
                out.push(match c {
                    b'a' => 7,
                    b'b' => 8,
                    b'f' => 12,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'v' => 11,
                    other => other,
                });
                i += 2;
            }
        }
    }
    out
}

fn html_entity_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'&' {
            out.push(input[i]);
            i += 1;
            continue;
        }
        let rest = &input[i + 1..];
        if let Some(num) = rest.strip_prefix(b"#") {
            let (hex, digits) = match num.first() {
                Some(b'x' | b'X') => (true, &num[1..]),
                _ => (false, num),
            };
            let mut n = 0usize;
            let mut v: u32 = 0;
            while n < digits.len() {
                let d = digits[n];
                let dv = if hex {
                    hexval(d).map(u32::from)
                } else if d.is_ascii_digit() {
                    Some(u32::from(d - b'0'))
                } else {
                    None
                };
                match dv {
                    Some(x) => v = v.wrapping_mul(if hex { 16 } else { 10 }).wrapping_add(x),
                    None => break,
                }
                n += 1;
            }
            if n > 0 {
                out.push((v & 0xff) as u8);
                let mut consumed = 1 + usize::from(hex) + n;
                if digits.get(n) == Some(&b';') {
                    consumed += 1;
                }
                i += 1 + consumed;
                continue;
            }
            out.push(b'&');
            i += 1;
            continue;
        }
        let names: [(&[u8], u8); 5] = [
            (b"quot", b'"'),
            (b"amp", b'&'),
            (b"lt", b'<'),
            (b"gt", b'>'),
            (b"nbsp", 0xa0),
        ];
        let mut done = false;
        for (name, val) in names {
            if rest.len() >= name.len() && rest[..name.len()].eq_ignore_ascii_case(name) {
                out.push(val);
                i += 1 + name.len();
                if input.get(i) == Some(&b';') {
                    i += 1;
                }
                done = true;
                break;
            }
        }
        if !done {
            out.push(b'&');
            i += 1;
        }
    }
    out
}

fn utf8_to_unicode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b < 0x80 {
            out.push(b);
            i += 1;
            continue;
        }
        let len = match b {
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => 0,
        };
        let decoded = if len > 0 && i + len <= input.len() {
            std::str::from_utf8(&input[i..i + len])
                .ok()
                .and_then(|s| s.chars().next())
        } else {
            None
        };
        match decoded {
            Some(ch) => {
                let s = format!("%u{:04x}", u32::from(ch));
                out.extend_from_slice(s.as_bytes());
                i += len;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn css_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'\\' {
            out.push(input[i]);
            i += 1;
            continue;
        }
        if i + 1 >= input.len() {
            // A trailing backslash is dropped.
            i += 1;
            continue;
        }
        let mut j = i + 1;
        let mut v: u32 = 0;
        while j < input.len() && j < i + 7 {
            match hexval(input[j]) {
                Some(d) => v = v << 4 | u32::from(d),
                None => break,
            }
            j += 1;
        }
        let n = j - i - 1;
        if n > 0 {
            out.push(if n > 2 {
                unicode_to_byte(v)
            } else {
                (v & 0xff) as u8
            });
            // One whitespace after a hex escape belongs to the escape.
            if j < input.len() && matches!(input[j], b' ' | b'\t' | b'\n' | b'\r' | 0x0c) {
                j += 1;
            }
            i = j;
        } else if input[i + 1] == b'\n' {
            i += 2;
        } else {
            out.push(input[i + 1]);
            i += 2;
        }
    }
    out
}

fn cmd_line(input: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(input.len());
    let mut space = false;
    for &b in input {
        match b {
            b'"' | b'\'' | b'\\' | b'^' => {}
            b' ' | b',' | b';' | b'\t' | b'\r' | b'\n' => {
                if !space {
                    out.push(b' ');
                    space = true;
                }
            }
            b'/' | b'(' => {
                if space {
                    out.pop();
                }
                space = false;
                out.push(b);
            }
            _ => {
                space = false;
                out.push(b.to_ascii_lowercase());
            }
        }
    }
    out
}

fn compress_whitespace(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut in_ws = false;
    for &b in input {
        if is_space(b) {
            if !in_ws {
                out.push(b' ');
            }
            in_ws = true;
        } else {
            in_ws = false;
            out.push(b);
        }
    }
    out
}

fn replace_comments(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'/' && input.get(i + 1) == Some(&b'*') {
            let mut j = i + 2;
            while j < input.len() && !(input[j] == b'*' && input.get(j + 1) == Some(&b'/')) {
                j += 1;
            }
            out.push(b' ');
            i = if j < input.len() { j + 2 } else { input.len() };
            continue;
        }
        if input[i] == b'*' && input.get(i + 1) == Some(&b'/') {
            // A stray comment end is kept as written, as ModSecurity does.
            out.push(b'*');
            out.push(b'/');
            i += 2;
            continue;
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

fn remove_comments(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'/' && input.get(i + 1) == Some(&b'*') {
            let mut j = i + 2;
            while j < input.len() && !(input[j] == b'*' && input.get(j + 1) == Some(&b'/')) {
                j += 1;
            }
            i = if j < input.len() { j + 2 } else { input.len() };
            continue;
        }
        if input[i] == b'<' && input[i..].starts_with(b"<!--") {
            let mut j = i + 4;
            while j < input.len() && !input[j..].starts_with(b"-->") {
                j += 1;
            }
            i = if j < input.len() { j + 3 } else { input.len() };
            continue;
        }
        if (input[i] == b'-' && input.get(i + 1) == Some(&b'-')) || input[i] == b'#' {
            break;
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

fn remove_comments_char(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let two = input.get(i..i + 2);
        if matches!(two, Some(b"/*") | Some(b"*/") | Some(b"--")) {
            i += 2;
            continue;
        }
        if input[i] == b'#' {
            i += 1;
            continue;
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

/// Whether `normalizePath` leaves `p` as it is: no empty, `.` or `..` segment between
/// slashes, at the start or at the end (most request paths).
fn path_is_normal(p: &[u8]) -> bool {
    // One pass over the segments: `.` and `..` anywhere, or an empty one other than before
    // a leading slash or after a trailing one, are what normalizePath changes.
    let last = memchr::memchr_iter(b'/', p).count();
    p.split(|&b| b == b'/')
        .enumerate()
        .all(|(i, seg)| match seg {
            b"." | b".." => false,
            b"" => i == 0 || i == last,
            _ => true,
        })
}

fn normalize_path(input: &[u8], win: bool) -> Vec<u8> {
    let src: Vec<u8> = if win {
        input
            .iter()
            .map(|&b| if b == b'\\' { b'/' } else { b })
            .collect()
    } else {
        input.to_vec()
    };
    if src.is_empty() {
        return src;
    }
    let absolute = src[0] == b'/';
    let trailing = src.len() > 1 && src[src.len() - 1] == b'/';
    let mut parts: Vec<&[u8]> = Vec::new();
    for seg in src.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                if matches!(parts.last(), Some(p) if *p != b"..") {
                    parts.pop();
                } else if !absolute {
                    parts.push(seg);
                }
            }
            _ => parts.push(seg),
        }
    }
    let mut out = Vec::with_capacity(src.len());
    if absolute {
        out.push(b'/');
    }
    for (k, p) in parts.iter().enumerate() {
        if k > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(p);
    }
    let last_dot = src.ends_with(b"/.") || src.ends_with(b"/..");
    if (trailing || last_dot) && !out.ends_with(b"/") {
        out.push(b'/');
    }
    out
}

fn escape_seq_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'\\' || i + 1 >= input.len() {
            out.push(input[i]);
            i += 1;
            continue;
        }
        let c = input[i + 1];
        let simple = match c {
            b'a' => Some(7),
            b'b' => Some(8),
            b'f' => Some(12),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(11),
            b'\\' | b'?' | b'\'' | b'"' => Some(c),
            _ => None,
        };
        if let Some(v) = simple {
            out.push(v);
            i += 2;
            continue;
        }
        if c == b'x' || c == b'X' {
            if let (Some(h), Some(l)) = (
                input.get(i + 2).and_then(|&c| hexval(c)),
                input.get(i + 3).and_then(|&c| hexval(c)),
            ) {
                out.push(h << 4 | l);
                i += 4;
                continue;
            }
        }
        if (b'0'..=b'7').contains(&c) {
            let mut v: u32 = 0;
            let mut j = i + 1;
            while j < input.len() && j < i + 4 && (b'0'..=b'7').contains(&input[j]) {
                v = v * 8 + u32::from(input[j] - b'0');
                j += 1;
            }
            out.push((v & 0xff) as u8);
            i = j;
            continue;
        }
        // Unknown escape: kept as written.
        out.push(b'\\');
        out.push(c);
        i += 2;
    }
    out
}

/// `base64Decode`'s alphabet: byte → its 6-bit value, [`B64_PAD`] for `=`, [`B64_OTHER`] for
/// anything else. Both alphabets (`+/` and `-_`) decode.
static B64_VALUE: [u8; 256] = {
    let mut t = [B64_OTHER; 256];
    let mut i = 0;
    while i < 26 {
        t[b'A' as usize + i] = i as u8;
        t[b'a' as usize + i] = 26 + i as u8;
        i += 1;
    }
    let mut d = 0;
    while d < 10 {
        t[b'0' as usize + d] = 52 + d as u8;
        d += 1;
    }
    t[b'+' as usize] = 62;
    t[b'-' as usize] = 62;
    t[b'/' as usize] = 63;
    t[b'_' as usize] = 63;
    t[b'=' as usize] = B64_PAD;
    t
};
const B64_PAD: u8 = 64;
const B64_OTHER: u8 = 65;

fn base64_decode(input: &[u8], ext: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() * 3 / 4 + 1);
    // Whole groups of four alphabet bytes first, three bytes out each; the first group
    // with another byte, and the tail, go byte by byte below.
    let mut quads = input.chunks_exact(4);
    let mut done = 0;
    for q in quads.by_ref() {
        let [a, b, c, d] = [0, 1, 2, 3].map(|i| B64_VALUE[q[i] as usize]);
        if (a | b | c | d) >= 64 {
            break;
        }
        out.extend_from_slice(&[a << 2 | b >> 4, b << 4 | c >> 2, c << 6 | d]);
        done += 4;
    }
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in &input[done..] {
        let v = match B64_VALUE[b as usize] {
            B64_PAD => break,
            B64_OTHER if ext => continue,
            B64_OTHER => break,
            v => v,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, input: &str) -> String {
        let tr = Transform::from_name(name).expect("known transformation");
        String::from_utf8_lossy(&tr.apply(input.as_bytes())).into_owned()
    }

    #[test]
    fn path_is_normal_matches_what_normalize_path_does() {
        for p in [
            "", "/", "/a", "/a/", "a/b", "/a/b.c", ".a", "a.", "/..a/b..", "...", "//", "/a//b",
            "//a", "a//", ".", "..", "./a", "../a", "/a/.", "/a/..", "/a/./b", "/a/../b",
        ] {
            let unchanged = super::normalize_path(p.as_bytes(), false) == p.as_bytes();
            // A relative `..` alone or at the start stays (nothing to go up to): the check
            // may call those changed, never the other way round.
            let conservative = p == ".." || p.starts_with("../");
            assert_eq!(
                path_is_normal(p.as_bytes()),
                unchanged && !conservative,
                "{p:?}"
            );
        }
    }

    #[test]
    fn names_are_case_insensitive() {
        assert_eq!(
            Transform::from_name("URLDECODEUNI"),
            Some(Transform::UrlDecodeUni)
        );
        assert_eq!(Transform::from_name("none"), None);
        assert_eq!(Transform::from_name("bogus"), None);
    }

    #[test]
    fn url_decode_uni() {
        assert_eq!(t("urlDecodeUni", "a%20b+c%u0041%uff1c%zz%"), "a b cA<%zz%");
    }

    #[test]
    fn lowercase() {
        assert_eq!(t("lowercase", "SeLeCT"), "select");
    }

    #[test]
    fn js_decode() {
        assert_eq!(t("jsDecode", r"\x41\u0042\n\101\q"), "AB\nAq");
    }

    #[test]
    fn html_entity_decode() {
        assert_eq!(
            t("htmlEntityDecode", "&lt;a&#x41;&#66;&quot;&amp;&foo;"),
            "<aAB\"&&foo;"
        );
        assert_eq!(t("htmlEntityDecode", "&#0000000000000000000000123;"), "{");
    }

    #[test]
    fn utf8_to_unicode() {
        assert_eq!(t("utf8toUnicode", "a\u{e9}\u{ff1c}"), "a%u00e9%uff1c");
    }

    #[test]
    fn remove_nulls() {
        assert_eq!(t("removeNulls", "a\0b"), "ab");
    }

    #[test]
    fn css_decode() {
        assert_eq!(t("cssDecode", r"\61 b\000063\j"), "abcj");
    }

    #[test]
    fn cmd_line() {
        assert_eq!(
            t("cmdLine", "C^AT  /ETC/pass'w'd ; ls , x"),
            "cat/etc/passwd ls x"
        );
    }

    #[test]
    fn whitespace() {
        assert_eq!(t("removeWhitespace", " a \t b\n"), "ab");
        assert_eq!(t("compressWhitespace", "a  \t b"), "a b");
    }

    #[test]
    fn comments() {
        assert_eq!(t("replaceComments", "a/*x*/b/*c"), "a b ");
        assert_eq!(t("removeCommentsChar", "a/*b*/c--d#e"), "abcde");
    }

    #[test]
    fn normalize_path() {
        assert_eq!(t("normalizePath", "/a/b/../c//./d"), "/a/c/d");
        assert_eq!(t("normalizePath", "/../../etc/passwd"), "/etc/passwd");
        assert_eq!(t("normalizePathWin", r"\a\..\b\"), "/b/");
    }

    #[test]
    fn escape_seq_decode() {
        assert_eq!(t("escapeSeqDecode", r"a\x41\101\n\z"), "aAA\n\\z");
    }

    #[test]
    fn length_sha1_hex() {
        assert_eq!(t("length", "abcd"), "4");
        let d = Transform::Sha1.apply(b"abc");
        assert_eq!(
            String::from_utf8_lossy(&Transform::HexEncode.apply(&d)),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }

    #[test]
    fn base64_table_is_the_alphabet_spelled_out() {
        for b in 0..=255u8 {
            let want = match b {
                b'A'..=b'Z' => b - b'A',
                b'a'..=b'z' => b - b'a' + 26,
                b'0'..=b'9' => b - b'0' + 52,
                b'+' | b'-' => 62,
                b'/' | b'_' => 63,
                b'=' => B64_PAD,
                _ => B64_OTHER,
            };
            assert_eq!(B64_VALUE[b as usize], want, "byte {b:#04x}");
        }
    }

    #[test]
    fn base64() {
        assert_eq!(t("base64Decode", "SGVsbG8="), "Hello");
        assert_eq!(t("base64DecodeExt", "SGV.sbG8"), "Hello");
    }
}

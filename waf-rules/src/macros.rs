//! Macro expansion (`%{tx.anomaly_score}`, `%{MATCHED_VAR}`), parsed once at load.

/// One part of a macro template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Literal text.
    Lit(String),
    /// A variable reference: upper-cased name and optional key (`TX` + `anomaly_score`).
    Var(String, Option<String>),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Macro {
    /// Its parts in order.
    pub parts: Vec<Part>,
}

/// A resolver that appends the value of a reference (variable name, key) to a buffer.
pub type ResolveInto<'a> = dyn Fn(&str, Option<&str>, &mut Vec<u8>) + 'a;

impl Macro {
    /// Parses `text`, splitting out `%{...}` references.
    pub fn parse(text: &str) -> Macro {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(p) = rest.find("%{") {
            let Some(e) = rest[p + 2..].find('}') else {
                break;
            };
            if p > 0 {
                parts.push(Part::Lit(rest[..p].to_string()));
            }
            let inner = &rest[p + 2..p + 2 + e];
            let (name, key) = match inner.split_once(['.', ':']) {
                Some((n, k)) => (n, Some(k.to_string())),
                None => (inner, None),
            };
            parts.push(Part::Var(name.to_ascii_uppercase(), key));
            rest = &rest[p + 3 + e..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        Macro { parts }
    }

    /// A literal template.
    pub fn lit(text: &str) -> Macro {
        Macro {
            parts: vec![Part::Lit(text.to_string())],
        }
    }

    /// The text when the template has no references.
    pub fn literal(&self) -> Option<&[u8]> {
        match self.parts.as_slice() {
            [] => Some(b""),
            [Part::Lit(s)] => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// The references in the template: (upper-cased name, key as written).
    pub fn vars(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(n, k) => Some((n.as_str(), k.as_deref())),
            Part::Lit(_) => None,
        })
    }

    /// The literal text before the first reference (`header_name_920450_` of
    /// `header_name_920450_%{tx.0}`).
    pub fn literal_start(&self) -> String {
        self.parts
            .iter()
            .map_while(|p| match p {
                Part::Lit(t) => Some(t.as_str()),
                Part::Var(..) => None,
            })
            .collect()
    }

    /// The one reference the template consists of (`%{tx.critical_anomaly_score}`).
    pub fn single_var(&self) -> Option<(&str, Option<&str>)> {
        match self.parts.as_slice() {
            [Part::Var(n, k)] => Some((n, k.as_deref())),
            _ => None,
        }
    }

    /// Appends the expanded template to `out`, with a resolver that appends a reference's
    /// value to the buffer it is given.
    pub fn expand_into(&self, out: &mut Vec<u8>, resolve: &ResolveInto) {
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.extend_from_slice(s.as_bytes()),
                Part::Var(n, k) => resolve(n, k.as_deref(), out),
            }
        }
    }

    /// Expands the template with a resolver for references.
    pub fn expand(&self, resolve: &dyn Fn(&str, Option<&str>) -> Vec<u8>) -> Vec<u8> {
        if let Some(l) = self.literal() {
            return l.to_vec();
        }
        if let [Part::Var(n, k)] = self.parts.as_slice() {
            return resolve(n, k.as_deref());
        }
        // Room for the literal parts and a short value per variable: most expansions (CRS's
        // run-time TX names) then never grow the buffer.
        let room = self.parts.iter().map(|p| match p {
            Part::Lit(s) => s.len(),
            Part::Var(..) => 32,
        });
        let mut out = Vec::with_capacity(room.sum());
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.extend_from_slice(s.as_bytes()),
                Part::Var(n, k) => out.extend(resolve(n, k.as_deref())),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_expands() {
        let m = Macro::parse("score %{tx.a}/%{MATCHED_VAR}%{x");
        assert_eq!(m.parts.len(), 5);
        let out = m.expand(&|n, k| format!("<{n}:{}>", k.unwrap_or("")).into_bytes());
        assert_eq!(out, b"score <TX:a>/<MATCHED_VAR:>%{x");
        // Into a buffer, after what it holds, the same bytes.
        let mut buf = b"kept ".to_vec();
        m.expand_into(&mut buf, &|n, k, out| {
            out.extend(format!("<{n}:{}>", k.unwrap_or("")).bytes())
        });
        assert_eq!(buf, b"kept score <TX:a>/<MATCHED_VAR:>%{x");
    }
}

/// One bad field of a request: its path (`order.lines[0].quantity`) and
/// what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub description: String,
}

/// Every bad field of a request, collected before answering, so a caller
/// fixes them all in one round trip.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
#[error("{} invalid field(s): {}", .0.len(), summary(.0))]
pub struct Violations(pub Vec<Violation>);

fn summary(v: &[Violation]) -> String {
    v.iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    /// A single violation.
    pub fn one(field: impl Into<String>, description: impl Into<String>) -> Self {
        let mut v = Self::new();
        v.add(field, description);
        v
    }

    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(Violation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// A violation of `field` when `text` (a reason, a reference: free text
    /// a record keeps) is longer than `max` bytes.
    pub fn at_most(&mut self, field: impl Into<String>, text: &str, max: usize) {
        if text.len() > max {
            self.add(field, format!("must be at most {max} characters"));
        }
    }

    /// A violation of `field[i]` for each entry of a list that repeats an
    /// earlier one, naming where it came first: a list that means a set
    /// (node ids, tenants, countries) says each member once.
    pub fn no_repeats<S: AsRef<str>>(&mut self, field: &str, items: &[S]) {
        let list = field.rsplit('.').next().unwrap_or(field);
        // First position of each entry (a map: a list may be long).
        let mut first = std::collections::HashMap::new();
        for (i, s) in items.iter().enumerate() {
            let s = s.as_ref();
            if let Some(j) = first.get(s) {
                self.add(
                    format!("{field}[{i}]"),
                    format!("repeats {list}[{j}] ({s})"),
                );
            } else {
                first.insert(s, i);
            }
        }
    }

    /// Records the error of `result` under `field` and returns its value.
    pub fn check<T, E: std::fmt::Display>(
        &mut self,
        field: impl Into<String>,
        result: Result<T, E>,
    ) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.add(field, e.to_string());
                None
            }
        }
    }

    /// Takes in the violations of `result`, checked elsewhere (a body's
    /// own checks), and returns its value.
    pub fn merge<T>(&mut self, result: Result<T, Violations>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(other) => {
                self.0.extend(other.0);
                None
            }
        }
    }

    /// Adds `other`'s violations with their fields prefixed by `prefix.`.
    pub fn nest(&mut self, prefix: &str, other: Violations) {
        for v in other.0 {
            self.add(format!("{prefix}.{}", v.field), v.description);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when nothing was found wrong.
    pub fn into_result<T>(self, value: T) -> Result<T, Violations> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

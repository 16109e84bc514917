//! A tiny JSON object writer (keeps the client's dependencies to tokio + rustls).

/// An object under construction; values are rendered as they are added.
#[derive(Default, Clone)]
pub struct Obj {
    fields: Vec<(String, String)>,
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Obj {
    pub fn new() -> Obj {
        Obj::default()
    }
    fn put(&mut self, k: &str, v: String) -> &mut Obj {
        self.fields.push((k.to_string(), v));
        self
    }
    pub fn str(&mut self, k: &str, v: &str) -> &mut Obj {
        self.put(k, escape(v))
    }
    pub fn int(&mut self, k: &str, v: u64) -> &mut Obj {
        self.put(k, v.to_string())
    }
    pub fn num(&mut self, k: &str, v: f64) -> &mut Obj {
        let s = if v.is_finite() {
            format!("{:.3}", v)
        } else {
            "null".into()
        };
        self.put(k, s)
    }
    pub fn bool(&mut self, k: &str, v: bool) -> &mut Obj {
        self.put(k, v.to_string())
    }
    pub fn ints(&mut self, k: &str, v: &[u64]) -> &mut Obj {
        let items: Vec<String> = v.iter().map(u64::to_string).collect();
        self.put(k, format!("[{}]", items.join(", ")))
    }
    pub fn obj(&mut self, k: &str, v: Obj) -> &mut Obj {
        self.put(k, v.render())
    }
    pub fn render(&self) -> String {
        let parts: Vec<String> = self
            .fields
            .iter()
            .map(|(k, v)| format!("{}: {}", escape(k), v))
            .collect();
        format!("{{{}}}", parts.join(", "))
    }
}

//! The lexer: one token at a time, so memory stays proportional to what is being built.

use crate::error::{IrError, Result};

/// A line:column position (1-based, columns count characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Pos {
    pub line: usize,
    pub col: usize,
}

/// What follows a sigil: a number (`%3`, `@0`) or a name (`%x`, `@"conv1.weight"`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum Label {
    Id(usize),
    Name(String),
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Label::Id(n) => write!(f, "{n}"),
            Label::Name(s) if super::print::is_ident(s) => f.write_str(s),
            Label::Name(s) => f.write_str(&super::print::quote(s)),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok<'s> {
    Ident(&'s str),
    /// `-?[0-9]+`
    Int(&'s str),
    /// A decimal with a fraction or an exponent.
    Float(&'s str),
    /// `0x…`: a float's bit pattern (the digits only).
    Hex(&'s str),
    Str(String),
    /// `%label[.index]` or `@label[.index]`.
    Ref {
        sigil: char,
        label: Label,
        index: Option<usize>,
    },
    /// One of `( ) { } [ ] , = : ? *`.
    Punct(char),
    Arrow,
    Eof,
}

impl Tok<'_> {
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) | Tok::Int(s) | Tok::Float(s) => format!("`{s}`"),
            Tok::Hex(s) => format!("`0x{s}`"),
            Tok::Str(s) => format!("the string {}", super::print::quote(s)),
            Tok::Ref {
                sigil,
                label,
                index: None,
            } => format!("`{sigil}{label}`"),
            Tok::Ref {
                sigil,
                label,
                index: Some(i),
            } => format!("`{sigil}{label}.{i}`"),
            Tok::Punct(c) => format!("`{c}`"),
            Tok::Arrow => "`->`".to_string(),
            Tok::Eof => "the end of the text".to_string(),
        }
    }
}

pub(super) struct Lexer<'s> {
    src: &'s str,
    /// Byte offset of the next character.
    at: usize,
    line: usize,
    col: usize,
}

pub(super) fn error_at(pos: Pos, msg: impl std::fmt::Display) -> IrError {
    IrError::msg(format!("{}:{}: {msg}", pos.line, pos.col))
}

fn ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl<'s> Lexer<'s> {
    pub fn new(src: &'s str) -> Lexer<'s> {
        Lexer {
            src,
            at: 0,
            line: 1,
            col: 1,
        }
    }

    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            col: self.col,
        }
    }

    fn peek_char(&self) -> Option<char> {
        self.src.get(self.at..).and_then(|s| s.chars().next())
    }

    fn peek_second(&self) -> Option<char> {
        self.src.get(self.at..).and_then(|s| s.chars().nth(1))
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek_char()?;
        self.at += c.len_utf8();
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    /// Consumes characters while `f` holds and returns them as a slice of the source.
    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'s str {
        let start = self.at;
        while let Some(c) = self.peek_char() {
            if !f(c) {
                break;
            }
            self.bump();
        }
        self.src.get(start..self.at).unwrap_or("")
    }

    fn skip_space(&mut self) {
        while let Some(c) = self.peek_char() {
            if c.is_whitespace() {
                self.bump();
            } else if c == '#' {
                self.take_while(|c| c != '\n');
            } else {
                break;
            }
        }
    }

    /// The next token and where it starts.
    pub fn next(&mut self) -> Result<(Tok<'s>, Pos)> {
        self.skip_space();
        let pos = self.pos();
        let Some(c) = self.peek_char() else {
            return Ok((Tok::Eof, pos));
        };
        let tok = match c {
            '(' | ')' | '{' | '}' | '[' | ']' | ',' | '=' | ':' | '?' | '*' => {
                self.bump();
                Tok::Punct(c)
            }
            '-' if self.peek_second() == Some('>') => {
                self.bump();
                self.bump();
                Tok::Arrow
            }
            '-' | '0'..='9' => self.number(pos)?,
            '"' => Tok::Str(self.string()?),
            '%' | '@' => {
                self.bump();
                let label = match self.peek_char() {
                    Some('"') => Label::Name(self.string()?),
                    Some(d) if d.is_ascii_digit() => Label::Id(self.index(pos)?),
                    Some(d) if ident_start(d) => Label::Name(self.take_while(ident_char).to_string()),
                    _ => return Err(error_at(pos, format!("expected a name or a number right after `{c}`"))),
                };
                let index = if self.peek_char() == Some('.') && self.peek_second().is_some_and(|d| d.is_ascii_digit()) {
                    self.bump();
                    Some(self.index(pos)?)
                } else {
                    None
                };
                Tok::Ref { sigil: c, label, index }
            }
            c if ident_start(c) => Tok::Ident(self.take_while(ident_char)),
            c => return Err(error_at(pos, format!("unexpected character {c:?}"))),
        };
        Ok((tok, pos))
    }

    fn index(&mut self, pos: Pos) -> Result<usize> {
        let digits = self.take_while(|c| c.is_ascii_digit());
        digits
            .parse::<usize>()
            .map_err(|_| error_at(pos, format!("the number {digits} is too large")))
    }

    fn number(&mut self, pos: Pos) -> Result<Tok<'s>> {
        let start = self.at;
        if self.peek_char() == Some('0') && matches!(self.peek_second(), Some('x' | 'X')) {
            self.bump();
            self.bump();
            let digits = self.take_while(|c| c.is_ascii_hexdigit());
            if digits.is_empty() {
                return Err(error_at(pos, "expected hex digits after `0x`"));
            }
            return Ok(Tok::Hex(digits));
        }
        if self.peek_char() == Some('-') {
            self.bump();
        }
        if self.take_while(|c| c.is_ascii_digit()).is_empty() {
            return Err(error_at(pos, "expected a digit after `-`"));
        }
        let mut float = false;
        if self.peek_char() == Some('.') {
            self.bump();
            float = true;
            if self.take_while(|c| c.is_ascii_digit()).is_empty() {
                return Err(error_at(pos, "expected a digit after the decimal point"));
            }
        }
        if matches!(self.peek_char(), Some('e' | 'E')) {
            self.bump();
            float = true;
            if matches!(self.peek_char(), Some('+' | '-')) {
                self.bump();
            }
            if self.take_while(|c| c.is_ascii_digit()).is_empty() {
                return Err(error_at(pos, "expected a digit in the exponent"));
            }
        }
        if self.peek_char().is_some_and(ident_char) {
            return Err(error_at(pos, "a number runs into a name; separate them"));
        }
        let text = self.src.get(start..self.at).unwrap_or("");
        Ok(if float { Tok::Float(text) } else { Tok::Int(text) })
    }

    /// A quoted string; the lexer stands on the opening quote.
    fn string(&mut self) -> Result<String> {
        let pos = self.pos();
        self.bump();
        let mut s = String::new();
        loop {
            let epos = self.pos();
            let Some(c) = self.bump() else {
                return Err(error_at(pos, "the string is not closed"));
            };
            match c {
                '"' => return Ok(s),
                '\\' => match self.bump() {
                    Some('"') => s.push('"'),
                    Some('\\') => s.push('\\'),
                    Some('n') => s.push('\n'),
                    Some('t') => s.push('\t'),
                    Some('r') => s.push('\r'),
                    Some('u') => {
                        if self.bump() != Some('{') {
                            return Err(error_at(epos, "expected `{` after `\\u`"));
                        }
                        let hex = self.take_while(|c| c.is_ascii_hexdigit());
                        if self.bump() != Some('}') || hex.is_empty() || hex.len() > 6 {
                            return Err(error_at(epos, "a `\\u{…}` escape takes 1 to 6 hex digits"));
                        }
                        let ch = u32::from_str_radix(hex, 16).ok().and_then(char::from_u32);
                        s.push(ch.ok_or_else(|| error_at(epos, format!("\\u{{{hex}}} is not a character")))?);
                    }
                    _ => return Err(error_at(epos, "unknown escape; use \\\" \\\\ \\n \\t \\r or \\u{…}")),
                },
                c => s.push(c),
            }
        }
    }
}

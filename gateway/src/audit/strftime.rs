//! START_TIME: Envoy's default `2026-11-24T11:46:23.596Z`, or a strftime subset, in UTC.

use std::time::SystemTime;

use time::OffsetDateTime;

use super::FormatError;

/// A parsed START_TIME format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TimeFormat {
    /// `%Y-%m-%dT%H:%M:%S.%3fZ`, Envoy's default.
    Default,
    /// A custom format, parsed once.
    Custom(Vec<TimePiece>),
}

/// One piece of a custom time format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TimePiece {
    Literal(Box<str>),
    /// `%Y`
    Year,
    /// `%y`
    Year2,
    /// `%m`
    Month,
    /// `%b`
    MonthName,
    /// `%d`
    Day,
    /// `%e`: day of month padded with a space.
    DaySpace,
    /// `%a`
    WeekdayName,
    /// `%j`
    DayOfYear,
    /// `%H`
    Hour,
    /// `%M`
    Minute,
    /// `%S`
    Second,
    /// `%Nf` (N digits of the second's fraction) and `%f` (9 digits).
    Fraction(u8),
    /// `%s`: seconds since the epoch.
    Epoch,
    /// `%z`: always `+0000` (START_TIME is UTC).
    Offset,
    /// `%Z`: always `UTC`.
    Zone,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

impl TimeFormat {
    /// Parses the argument of `START_TIME(...)`; empty means the default.
    ///
    /// Fails on a specifier outside the supported subset.
    pub(crate) fn parse(spec: &str) -> Result<Self, FormatError> {
        if spec.is_empty() {
            return Ok(Self::Default);
        }
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = spec.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                literal.push(c);
                continue;
            }
            let mut spec_char = chars.next();
            let mut digits = None;
            if let Some(d @ '1'..='9') = spec_char {
                if chars.peek() == Some(&'f') {
                    digits = d.to_digit(10).and_then(|d| u8::try_from(d).ok());
                    spec_char = chars.next();
                }
            }
            let piece = match spec_char {
                Some('%') => {
                    literal.push('%');
                    continue;
                }
                Some('Y') => TimePiece::Year,
                Some('y') => TimePiece::Year2,
                Some('m') => TimePiece::Month,
                Some('b') => TimePiece::MonthName,
                Some('d') => TimePiece::Day,
                Some('e') => TimePiece::DaySpace,
                Some('a') => TimePiece::WeekdayName,
                Some('j') => TimePiece::DayOfYear,
                Some('H') => TimePiece::Hour,
                Some('M') => TimePiece::Minute,
                Some('S') => TimePiece::Second,
                Some('f') => TimePiece::Fraction(digits.unwrap_or(9)),
                Some('s') => TimePiece::Epoch,
                Some('z') => TimePiece::Offset,
                Some('Z') => TimePiece::Zone,
                Some('F') => {
                    literal_flush(&mut pieces, &mut literal);
                    pieces.extend([
                        TimePiece::Year,
                        TimePiece::Literal("-".into()),
                        TimePiece::Month,
                        TimePiece::Literal("-".into()),
                        TimePiece::Day,
                    ]);
                    continue;
                }
                Some('T') => {
                    literal_flush(&mut pieces, &mut literal);
                    pieces.extend([
                        TimePiece::Hour,
                        TimePiece::Literal(":".into()),
                        TimePiece::Minute,
                        TimePiece::Literal(":".into()),
                        TimePiece::Second,
                    ]);
                    continue;
                }
                other => {
                    let shown = other.map(String::from).unwrap_or_default();
                    return Err(FormatError(format!(
                        "unsupported time specifier %{shown} in START_TIME({spec}); supported: \
                         %Y %y %m %b %d %e %a %j %H %M %S %f %1f-%9f %s %z %Z %F %T %%"
                    )));
                }
            };
            literal_flush(&mut pieces, &mut literal);
            pieces.push(piece);
        }
        literal_flush(&mut pieces, &mut literal);
        Ok(Self::Custom(pieces))
    }

    /// Appends `at` in this format.
    pub(crate) fn write(&self, at: SystemTime, out: &mut String) {
        let t = OffsetDateTime::from(at);
        match self {
            Self::Default => {
                push_year(out, t.year());
                out.push('-');
                push_padded(out, u64::from(u8::from(t.month())), 2);
                out.push('-');
                push_padded(out, u64::from(t.day()), 2);
                out.push('T');
                push_padded(out, u64::from(t.hour()), 2);
                out.push(':');
                push_padded(out, u64::from(t.minute()), 2);
                out.push(':');
                push_padded(out, u64::from(t.second()), 2);
                out.push('.');
                push_padded(out, u64::from(t.millisecond()), 3);
                out.push('Z');
            }
            Self::Custom(pieces) => {
                for piece in pieces {
                    write_piece(piece, &t, out);
                }
            }
        }
    }
}

fn literal_flush(pieces: &mut Vec<TimePiece>, literal: &mut String) {
    if !literal.is_empty() {
        pieces.push(TimePiece::Literal(std::mem::take(literal).into_boxed_str()));
    }
}

fn write_piece(piece: &TimePiece, t: &OffsetDateTime, out: &mut String) {
    match piece {
        TimePiece::Literal(s) => out.push_str(s),
        TimePiece::Year => push_year(out, t.year()),
        TimePiece::Year2 => push_padded(out, u64::from(t.year().rem_euclid(100).unsigned_abs()), 2),
        TimePiece::Month => push_padded(out, u64::from(u8::from(t.month())), 2),
        TimePiece::MonthName => out.push_str(MONTHS[usize::from(u8::from(t.month()) - 1)]),
        TimePiece::Day => push_padded(out, u64::from(t.day()), 2),
        TimePiece::DaySpace => {
            if t.day() < 10 {
                out.push(' ');
            }
            push_padded(out, u64::from(t.day()), 1);
        }
        TimePiece::WeekdayName => {
            out.push_str(WEEKDAYS[usize::from(t.weekday().number_days_from_monday())]);
        }
        TimePiece::DayOfYear => push_padded(out, u64::from(t.ordinal()), 3),
        TimePiece::Hour => push_padded(out, u64::from(t.hour()), 2),
        TimePiece::Minute => push_padded(out, u64::from(t.minute()), 2),
        TimePiece::Second => push_padded(out, u64::from(t.second()), 2),
        TimePiece::Fraction(digits) => {
            let digits = u32::from(*digits);
            let value = t.nanosecond() / 10u32.pow(9 - digits);
            push_padded(out, u64::from(value), digits);
        }
        TimePiece::Epoch => {
            let secs = t.unix_timestamp();
            if secs < 0 {
                out.push('-');
            }
            push_padded(out, secs.unsigned_abs(), 1);
        }
        TimePiece::Offset => out.push_str("+0000"),
        TimePiece::Zone => out.push_str("UTC"),
    }
}

fn push_year(out: &mut String, year: i32) {
    if year < 0 {
        out.push('-');
    }
    push_padded(out, u64::from(year.unsigned_abs()), 4);
}

/// Appends `value` in decimal, left-padded with zeros to `width` digits.
fn push_padded(out: &mut String, value: u64, width: u32) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(value);
    for _ in digits.len()..width as usize {
        out.push('0');
    }
    out.push_str(digits);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)
    }

    fn render(spec: &str, t: SystemTime) -> String {
        let mut out = String::new();
        TimeFormat::parse(spec).unwrap().write(t, &mut out);
        out
    }

    #[test]
    fn default_is_envoys() {
        // 2024-01-09T15:35:47.283Z
        let t = at(1_704_814_547, 283_999_999);
        assert_eq!(render("", t), "2024-01-09T15:35:47.283Z");
        assert_eq!(render("", at(0, 0)), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn custom_formats() {
        let t = at(1_704_814_547, 283_456_789);
        assert_eq!(render("%Y-%m-%dT%H:%M:%S%z", t), "2024-01-09T15:35:47+0000");
        assert_eq!(render("%d/%b/%Y:%T %z", t), "09/Jan/2024:15:35:47 +0000");
        assert_eq!(
            render("%s.%3f|%6f|%f|%1f", t),
            "1704814547.283|283456|283456789|2"
        );
        assert_eq!(
            render("%F %a %e %j %y %Z 100%%", t),
            "2024-01-09 Tue  9 009 24 UTC 100%"
        );
    }

    #[test]
    fn unsupported_specifier_is_named() {
        let err = TimeFormat::parse("%Y %Q").unwrap_err();
        assert!(err.0.contains("%Q"), "{err}");
        assert!(TimeFormat::parse("%").is_err());
    }
}

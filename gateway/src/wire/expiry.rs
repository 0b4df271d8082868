//! When an X.509 certificate (DER) stops being valid: its notAfter, as Unix seconds,
//! for the metric an expiry alert watches. Only the path to the validity is walked.

use super::der::{Der, DerError, SEQUENCE};

const VERSION: u8 = 0xa0; // [0] EXPLICIT in TBSCertificate, absent for v1
const INTEGER: u8 = 0x02;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The notAfter of the DER certificate `cert`, in seconds since the Unix epoch.
///
/// Fails when the DER on the way is truncated or malformed, or the time is not the
/// `YYMMDDHHMMSSZ` (UTCTime) or `YYYYMMDDHHMMSSZ` (GeneralizedTime) RFC 5280 requires.
pub fn not_after(cert: &[u8]) -> Result<i64, DerError> {
    let certificate = Der::new(cert).expect(SEQUENCE, "certificate is not a SEQUENCE")?;
    let mut tbs =
        Der::new(Der::new(certificate).expect(SEQUENCE, "tbsCertificate is not a SEQUENCE")?);
    let (mut tag, _) = tbs.next()?;
    if tag == VERSION {
        (tag, _) = tbs.next()?;
    }
    if tag != INTEGER {
        return Err(DerError::Malformed("serialNumber is not an INTEGER"));
    }
    tbs.expect(SEQUENCE, "signature is not a SEQUENCE")?;
    tbs.expect(SEQUENCE, "issuer is not a SEQUENCE")?;
    let mut validity = Der::new(tbs.expect(SEQUENCE, "validity is not a SEQUENCE")?);
    validity.next()?;
    let (tag, time) = validity.next()?;
    let digits = std::str::from_utf8(time)
        .ok()
        .and_then(|t| t.strip_suffix('Z'))
        .filter(|t| t.bytes().all(|b| b.is_ascii_digit()))
        .ok_or(DerError::Malformed("notAfter is not digits ending in Z"))?;
    let (year, rest) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            // RFC 5280 4.1.2.5.1: YY of 50 or more is 19YY, less is 20YY.
            let yy = number(&digits[..2]);
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (GENERALIZED_TIME, 14) => (number(&digits[..4]), &digits[4..]),
        _ => {
            return Err(DerError::Malformed(
                "notAfter is not a UTCTime or GeneralizedTime",
            ))
        }
    };
    let [month, day, hour, minute, second] = [0, 2, 4, 6, 8].map(|at| number(&rest[at..at + 2]));
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(DerError::Malformed("notAfter is not a valid time"));
    }
    Ok(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// The value of ASCII digits (already checked to be digits).
fn number(digits: &str) -> i64 {
    digits.bytes().fold(0, |n, b| n * 10 + i64::from(b - b'0'))
}

/// Days from 1970-01-01 to the proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use egress_testkit::TestCa;

    #[test]
    fn civil_dates_count_days_from_the_epoch() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2100, 1, 1) * 86_400, 4_102_444_800);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }

    #[test]
    fn the_not_after_of_issued_certificates_is_read_in_both_time_forms() {
        let ca = TestCa::new();
        // Valid until 2100-01-01: a GeneralizedTime (after 2049).
        let current = ca.issue_server(&["api.example.com"]);
        assert_eq!(not_after(&current.cert_der), Ok(4_102_444_800));
        // Valid until 2001-01-01: a UTCTime.
        let expired = ca.issue_expired_server(&["api.example.com"]);
        assert_eq!(not_after(&expired.cert_der), Ok(978_307_200));
    }

    #[test]
    fn truncated_or_odd_certificates_are_errors_not_panics() {
        let cert = TestCa::new().issue_server(&["a.example"]).cert_der;
        for len in 0..cert.len().min(400) {
            assert!(not_after(&cert[..len]).is_err(), "{len} bytes");
        }
        assert!(not_after(b"\x30\x03\x02\x01\x00").is_err());
    }
}

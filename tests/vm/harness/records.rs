//! Checking the records the guest's writer (`tests/vm/writer.sh`) appended, as found in a copy
//! of the volume: a point-in-time consistent copy holds a gap-free prefix of the sequence,
//! every record complete and its checksum right; a torn or zero-filled tail shows up here.

/// The pad every record ends with (must match writer.sh).
pub const PAD: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

/// How many problems a report lists before it only counts them.
const MAX_LISTED: usize = 5;

/// The checksum writer.sh computes.
pub fn checksum(seq: u64, rnd: u64) -> u64 {
    (seq * 2_654_435_761 + rnd * 40_503 + 12_345) % 4_294_967_291
}

/// One record line as writer.sh prints it (without the newline).
pub fn format_record(seq: u64, rnd: u64) -> String {
    format!("R {seq:010} {rnd:05} {:010} {PAD}", checksum(seq, rnd))
}

/// What the check of a records file found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordReport {
    /// Records that verified, in sequence from 0.
    pub valid: u64,
    /// Problems found (the first few), e.g. a bad checksum, a gap, a torn last record.
    pub problems: Vec<String>,
    /// Number of problems in all.
    pub problem_count: usize,
}

impl RecordReport {
    /// True when there was at least one record and every byte of the file verified.
    pub fn consistent(&self) -> bool {
        self.valid > 0 && self.problem_count == 0
    }

    fn problem(&mut self, p: String) {
        if self.problems.len() < MAX_LISTED {
            self.problems.push(p);
        }
        self.problem_count += 1;
    }
}

/// Parses one line into (seq, rnd) if it is a well-formed record with the right checksum.
fn parse(line: &str) -> Result<(u64, u64), String> {
    let mut f = line.split(' ');
    let (Some("R"), Some(seq), Some(rnd), Some(sum), Some(pad), None) =
        (f.next(), f.next(), f.next(), f.next(), f.next(), f.next())
    else {
        return Err("not a record".into());
    };
    let num = |s: &str, width: usize| -> Result<u64, String> {
        if s.len() != width || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("bad field {s:?}"));
        }
        s.parse().map_err(|_| format!("bad field {s:?}"))
    };
    let (seq, rnd, sum) = (num(seq, 10)?, num(rnd, 5)?, num(sum, 10)?);
    if pad != PAD {
        return Err("bad pad".into());
    }
    if checksum(seq, rnd) != sum {
        return Err(format!("checksum {sum} should be {}", checksum(seq, rnd)));
    }
    Ok((seq, rnd))
}

/// Checks a whole records file.
pub fn verify(data: &[u8]) -> RecordReport {
    let mut report = RecordReport::default();
    let mut expected = 0u64;
    let mut rest = data;
    let mut offset = 0usize;
    while !rest.is_empty() {
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            report.problem(format!(
                "offset {offset}: {} bytes without a newline at the end (torn record)",
                rest.len()
            ));
            break;
        };
        let line = String::from_utf8_lossy(&rest[..nl]);
        match parse(&line) {
            Ok((seq, _)) if seq == expected => {
                report.valid += 1;
                expected += 1;
            }
            Ok((seq, _)) => {
                report.problem(format!(
                    "offset {offset}: record {seq} where {expected} was due"
                ));
                expected = seq + 1;
            }
            Err(why) => {
                let shown: String = line.chars().take(40).collect();
                report.problem(format!("offset {offset}: {why}: {shown:?}"));
            }
        }
        offset += nl + 1;
        rest = &rest[nl + 1..];
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(n: u64) -> String {
        (0..n)
            .map(|s| format_record(s, (s * 7919) % 32768) + "\n")
            .collect()
    }

    #[test]
    fn the_record_format_matches_the_writer_script() {
        // The exact line writer.sh prints for seq 5, rnd 12345 (computed by busybox sh).
        assert_eq!(
            format_record(5, 12345),
            format!("R 0000000005 12345 0887298812 {PAD}")
        );
        let script = std::fs::read_to_string(super::super::bins::vm_file("writer.sh")).unwrap();
        assert!(script.contains(&format!("pad={PAD}\n")));
        assert!(script.contains("% 4294967291"));
    }

    #[test]
    fn a_clean_file_verifies() {
        let r = verify(file(100).as_bytes());
        assert_eq!(r.valid, 100);
        assert!(r.consistent(), "{r:?}");
        assert!(!verify(b"").consistent());
    }

    #[test]
    fn torn_zeroed_corrupt_and_missing_records_are_found() {
        let good = file(10);
        let torn = format!("{good}R 0000000010 00");
        assert!(!verify(torn.as_bytes()).consistent());

        let mut zeroed = good.clone().into_bytes();
        zeroed.extend_from_slice(&[0u8; 100]);
        zeroed.push(b'\n');
        let r = verify(&zeroed);
        assert_eq!(r.valid, 10);
        assert_eq!(r.problem_count, 1, "{r:?}");

        let corrupt = good.replacen("R 0000000003 ", "R 0000000003 9", 1);
        assert!(!verify(corrupt.as_bytes()).consistent());

        let gap: String = good
            .lines()
            .filter(|l| !l.starts_with("R 0000000004 "))
            .map(|l| format!("{l}\n"))
            .collect();
        let r = verify(gap.as_bytes());
        assert_eq!(r.problem_count, 1, "{r:?}");
        assert!(r.problems[0].contains("record 5 where 4 was due"), "{r:?}");
    }
}

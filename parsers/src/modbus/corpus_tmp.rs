use super::*;
use std::collections::BTreeMap;

#[test]
fn corpus_tmp() {
    let text = std::fs::read_to_string("/tmp/modbus_corpus.tsv").unwrap();
    let mut stats: BTreeMap<String, usize> = BTreeMap::new();
    let mut examples: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        let (file, frame, dport, hex) = (cols[0], cols[1], cols[3], cols[4]);
        let bytes: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let dir = if dport == "502" {
            Direction::Request
        } else {
            Direction::Response
        };
        let mut rest = &bytes[..];
        loop {
            let key = match parse_adu(rest) {
                AduResult::Complete { adu, consumed } => {
                    rest = &rest[consumed..];
                    match adu.parse_pdu(dir) {
                        Ok(p) => format!("{file}\tok\t{:?}\tfc{}", dir, p.function.0),
                        Err(e) => format!(
                            "{file}\tERR\t{:?}\tfc{}\t{}@{}",
                            dir,
                            e.function.0,
                            e.kind.as_str(),
                            e.offset
                        ),
                    }
                }
                AduResult::Incomplete { needed } => {
                    if rest.is_empty() {
                        break;
                    }
                    let k = format!("{file}\tincomplete");
                    let _ = needed;
                    *stats.entry(k.clone()).or_default() += 1;
                    examples
                        .entry(k)
                        .or_insert(format!("{frame} {}", &hex[..hex.len().min(80)]));
                    break;
                }
                AduResult::Invalid(e) => {
                    println!(
                        "RESYNC {file} {frame} {:?} -> {:?} (len {})",
                        e,
                        find_resync(rest),
                        rest.len()
                    );
                    let k = format!("{file}\tinvalid\t{}", e.as_str());
                    *stats.entry(k.clone()).or_default() += 1;
                    examples
                        .entry(k)
                        .or_insert(format!("{frame} {}", &hex[..hex.len().min(80)]));
                    break;
                }
            };
            *stats.entry(key.clone()).or_default() += 1;
            examples
                .entry(key)
                .or_insert(format!("{frame} {}", &hex[..hex.len().min(80)]));
        }
    }
    for (k, v) in &stats {
        if k.contains("\tok\t") {
            println!("{v:6} {k}");
        } else {
            println!("{v:6} {k}   e.g. {}", examples[k]);
        }
    }
}

//! The fuzz targets' bodies (fuzz/fuzz_targets/bodies.rs) on the stable toolchain: known nasty seeds, then
//! pseudo-random inputs built from the characters parsers care about. cargo-fuzz explores far more (see
//! fuzz/Cargo.toml); this keeps every body exercised in every `cargo test`.

#[path = "../../fuzz/fuzz_targets/bodies.rs"]
mod bodies;

const SEEDS: &[&str] = &[
    "",
    "/",
    "//evil",
    "/\\evil",
    "/%5Cevil",
    "%2F%2Fevil",
    "/public/../admin",
    "/public/%2e%2e/admin",
    "/public/.%2E/admin",
    "/admin/./",
    "/%61dmin",
    "/admin%2f",
    "/a%",
    "/a%zz",
    "/\u{ff0f}evil",
    "/gesch\u{e4}ft/%C3%A4%FF%c3",
    "/%40admin;x=%3B/%2541\"{}",
    "/#)%5c1",
    "/a#/%2F%2Fevil?x=%0a",
    "logto_gate=; logto_gate.0=AAAA; logto_gate.1=BBBB",
    "logto_gate=\"quoted\"; a=b;;; =c; logto_gate_signin_aaaaaaaaaaaaaaaa=x",
    "a.b.c",
    "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
    "eyJhbGciOiJFUzM4NCIsImtpZCI6IngifQ.e30.AAAA",
    "eyJhbGciOiJFUzM4NCIsImNyaXQiOlsiZXhwIl19.e30.AAAA",
    "[server]\npublic_url = 1\n---\nSESSION__SECRET=12345",
    "[[rules]]\npath = \"([\"\n",
    "[headers]\n\"X\\u0000\" = \"sub\"",
    "[logto]\nscopes = [\"a\", \"\\\"\"]",
    "\u{2}--B\r\nContent-Disposition: form-data; name=_method\r\n\r\nDELETE\r\n--B",
    "\u{4}multipart/x; boundary=\"--\"\n----\n\n----",
    "\u{0}_%6Dethod=x&;_method=&%5B",
    "\u{3}{\"_method\": \"PATCH\", \"_method\": 1}",
];

const ALPHABET: &[u8] = b"/\\.%25fFcC2e=;, \t\r\n\"'[]{}:#?&@aAbB0x-_";

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn input(&mut self) -> Vec<u8> {
        let len = (self.next() % 200) as usize;
        (0..len)
            .map(|_| {
                let r = self.next();
                if r % 8 == 0 {
                    (r >> 8) as u8
                } else {
                    ALPHABET[((r >> 8) % ALPHABET.len() as u64) as usize]
                }
            })
            .collect()
    }
}

fn run(body: fn(&[u8])) {
    for seed in SEEDS {
        body(seed.as_bytes());
        body(format!("/{seed}").as_bytes());
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..4000 {
        body(&rng.input());
    }
}

#[test]
fn fuzz_body_session_cookie() {
    run(bodies::session_cookie);
}

#[test]
fn fuzz_body_return_path() {
    run(bodies::return_path);
}

#[test]
fn fuzz_body_path_and_rules() {
    run(bodies::path_and_rules);
}

#[test]
fn fuzz_body_form_method() {
    run(bodies::form_method);
}

#[test]
fn fuzz_body_config() {
    run(bodies::config_text);
}

#[test]
fn fuzz_body_claim_header() {
    run(bodies::claim_header);
    // Elements that start or end with the list's own separators and whitespace.
    for seed in ["a| admin|b", "admin |x,y|", "|,|\t|a", "a|b|a"] {
        bodies::claim_header(seed.as_bytes());
    }
}

#[test]
fn fuzz_body_jwt() {
    run(bodies::jwt);
}

#[test]
fn fuzz_body_framing() {
    run(bodies::framing);
    // Bytes that pick fragments: whole requests with lengths, chunks and trailers.
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for _ in 0..4000 {
        let input: Vec<u8> = (0..64).map(|_| (rng.next() % 24) as u8).collect();
        bodies::framing(&input);
    }
}

#[test]
fn fuzz_body_front_head() {
    run(bodies::front_head);
    // Bytes that pick fragments: heads the front serves, and every kind it hands over.
    let mut rng = Rng(0x3c6e_f372_fe94_f82b);
    for _ in 0..4000 {
        let input: Vec<u8> = (0..48).map(|_| (rng.next() % 20) as u8).collect();
        bodies::front_head(&input);
    }
}

#[test]
fn fuzz_body_upstream_response() {
    run(bodies::upstream_response);
    // Bytes that pick fragments: whole responses with lengths, chunks, trailers and interim heads.
    let mut rng = Rng(0x6a09_e667_f3bc_c909);
    for _ in 0..4000 {
        let input: Vec<u8> = (0..64).map(|_| (rng.next() % 26) as u8).collect();
        bodies::upstream_response(&input);
    }
}

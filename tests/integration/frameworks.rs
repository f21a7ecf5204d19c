//! A form's `_method` against real frameworks: Rack's `MethodOverride` (Rails) and Symfony's HttpFoundation
//! (Laravel, Symfony) behind the gate, each answering the method it took a request as. For every body of a corpus
//! of form, multipart and JSON spellings (the edges where parsers differ among them), and of bodies mutated from it
//! with a fixed seed (200 unless `MUTATED` says how many; `MUTATION_SEED` another seed), the gate must not let Bob
//! reach a method the rules refuse him: whatever the app took a request the gate passed as, he may use.

use reqwest::StatusCode;

use crate::support::frameworks::FrameworkApp;
use crate::support::*;

/// The methods `RULES` refuse Bob.
const REFUSED: [&str; 3] = ["DELETE", "PUT", "PATCH"];

const RULES: &str = "[[rules]]\nprefix = \"/items\"\nmethods = [\"DELETE\", \"PUT\", \"PATCH\"]\nroles = [\"admin\"]\n";

/// Bodies (`Content-Type`, body) that some framework may take for another method than `POST`.
fn corpus() -> Vec<(Option<String>, Vec<u8>)> {
    let mut out: Vec<(Option<String>, Vec<u8>)> = Vec::new();
    let form = |t: &str| Some(t.to_owned());
    for body in [
        "_method=DELETE",
        "a=1&_method=delete",
        "_method=PUT&_method=DELETE",
        "%5Fmethod=PATCH",
        "+_method=PUT",
    ] {
        out.push((form("application/x-www-form-urlencoded"), body.into()));
        out.push((form("application/x-www-form-urlencoded; charset=utf-16"), body.into()));
        out.push((form("application/x-www-form-urlencoded, text/plain"), body.into()));
        out.push((form("application/x-www-form-urlencoded foo"), body.into()));
        out.push((None, body.into()));
    }
    out.push((form("application/json"), br#"{"_method":"DELETE"}"#.to_vec()));
    // Express's body-parser drops a UTF-8 byte order mark, and decodes JSON in any `utf-` charset it knows.
    const BOM: &[u8] = b"\xef\xbb\xbf";
    out.push((
        form("application/x-www-form-urlencoded"),
        [BOM, b"_method=DELETE"].concat(),
    ));
    out.push((form("application/json"), [BOM, br#"{"_method":"PUT"}"#].concat()));
    let json = r#"{"_method":"DELETE"}"#;
    let utf16 = |big: bool| -> Vec<u8> {
        json.encode_utf16()
            .flat_map(|u| if big { u.to_be_bytes() } else { u.to_le_bytes() })
            .collect()
    };
    out.push((form("application/json; charset=utf-16le"), utf16(false)));
    out.push((form("application/json; charset=UTF-16BE"), utf16(true)));
    out.push((
        form("application/json; charset=utf-16"),
        [&[0xff, 0xfe][..], &utf16(false)].concat(),
    ));
    out.push((
        form("application/json; charset=\"utf-7\""),
        br#"{"+AF8-method":"PATCH"}"#.to_vec(),
    ));
    out.push((form("application/json"), br#"{"\u005fmethod":"DELETE"}"#.to_vec()));
    out.push((
        form("application/json"),
        br#"{"_method":"POST","_method":"PUT"}"#.to_vec(),
    ));
    // Express's method-override takes an array's first element.
    out.push((form("application/json"), br#"{"_method":["DELETE","POST"]}"#.to_vec()));
    for eol in ["\r\n", "\n"] {
        for name in [
            "\"_method\"",
            "_method",
            "\"\\_method\"",
            "\" _method\"",
            "\"_method\"; filename=\"m\"",
        ] {
            for kind in ["form-data", "mixed"] {
                let body = format!(
                    "--B{eol}Content-Disposition: form-data; name=\"a\"{eol}{eol}1{eol}\
                     --B{eol}Content-Disposition: form-data; name={name}{eol}{eol}DELETE{eol}--B--{eol}"
                );
                out.push((form(&format!("multipart/{kind}; boundary=B")), body.into_bytes()));
            }
        }
    }
    let multipart = |body: &str| (form("multipart/form-data; boundary=B"), body.as_bytes().to_vec());
    out.extend([
        multipart("--B\r\nContent-ID: _method\r\n\r\nDELETE\r\n--B--\r\n"),
        multipart("--B\r\nContent-Disposition: form-data; name=_method\" x\"\r\n\r\nDELETE\r\n--B--\r\n"),
        multipart("--B\r\nContent-Disposition: form-data; name=\"t\"\r\nX-Junk; name=_method\r\n\r\nPUT\r\n--B--\r\n"),
        multipart(
            "--B\r\nContent-Disposition: form-data; name=\"_method\"\n\nPOST\r\n--B\r\n\
             Content-Disposition: form-data; name=\"a\"\r\n\r\nDELETE\r\n--B--\r\n",
        ),
        multipart("--B \r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--B--\r\n"),
        multipart(
            "--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--B--\r\n--B\r\n\
             Content-Disposition: form-data; name=\"_method\"\r\n\r\nPATCH\r\n--B--\r\n",
        ),
        multipart("preamble\r\n--B\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nput\r\n--B--\r\n"),
        // Found by the mutated bodies and after them (2026-12-07): PHP joins a head line with no `:`, or one that
        // starts with a blank, to the field before it; skips a vertical tab after `=` and ends a bare name at one;
        // cuts names at a NUL; ends a head at a line starting with a NUL, or after a line of exactly its 5 KiB
        // buffer; reads a head over a delimiter line. Rack ends a head only at CRLF CRLF, takes ` --B` for a
        // delimiter, strips brackets around a name.
        multipart(
            "--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--B--\r\n--B\r\n\
             Content-Disposition: form-data; name=\r\n\r\"_method\"\r\n\r\nPATCH\r\n--B--\r\n",
        ),
        multipart("--B\r\nContent-Disposition: form-data; name=\r\n_method\r\n\r\nDELETE\r\n--B--\r\n"),
        multipart("--B\r\nContent-Disposition: form-data; na\r\nme=_method\r\n\r\nDELETE\r\n--B--\r\n"),
        multipart("--B\r\nContent-Disposition: form-data; name=\"_me\r\nthod\"\r\n\r\nPUT\r\n--B--\r\n"),
        multipart("--B\r\nContent-Disposition: form-data; name=\x0b\"_method\"\r\n\r\nDELETE\r\n--B--\r\n"),
        multipart("--B\r\nContent-Disposition: form-data; name=_method\x0bx\r\n\r\nDELETE\r\n--B--\r\n"),
        multipart("--B\r\nContent-Disposition: form-data; name=_method\0x\r\n\r\nDELETE\r\n--B--\r\n"),
        multipart("--B\r\nContent-Disposition: form-data; name=_method\r\n\0x\r\nDELETE\r\n--B--\r\n"),
        multipart("--B\r\nContent-Disposition: form-data; name=\"_method\"\r\n--B\n\nDELETE\r\n--B--\r\n"),
        multipart("--B\r\nX: 1\n\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--B--\r\n"),
        multipart(" --B\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--B--\r\n"),
        multipart("--B\r\nContent-Disposition: form-data; name=\"[_method]\"\r\n\r\nDELETE\r\n--B--\r\n"),
        (
            form("multipart/form-data; boundary=B"),
            format!(
                "--B\r\nContent-Disposition: form-data; name=_method; x={}\nPUT\r\n--B--\r\n",
                "x".repeat(5 * 1024 - "Content-Disposition: form-data; name=_method; x=".len())
            )
            .into_bytes(),
        ),
    ]);
    for body in [
        "[_method]=DELETE",
        // Express's `qs` drops what follows a name's last bracketed group, and method-override takes an array's
        // first element (found by the mutated bodies).
        "[_method]x=DELETE",
        "_method[]=PUT",
        "[_method][]x=DELETE",
        "_method]=PUT",
        "]]_method=PATCH",
        "_method%00x=DELETE",
        "_method\0x=PUT",
    ] {
        out.push((form("application/x-www-form-urlencoded"), body.into()));
    }
    // Express's multer (busboy) drops a quoted boundary's escapes: `B"x` where PHP and Rack read `B\`.
    out.push((
        form("multipart/form-data; boundary=\"B\\\"x\""),
        b"--B\"x\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--B\"x--\r\n".to_vec(),
    ));
    out.push(multipart(
        "--B\r\nContent-Disposition: form-data; name=\"_method[]\"\r\n\r\nPUT\r\n--B--\r\n",
    ));
    // Go's mime.ParseMediaType joins RFC 2231 continuations (`name*0`, `name*1*`) and decodes them.
    out.extend([
        multipart("--B\r\nContent-Disposition: form-data; name*0=\"_me\"; name*1=\"thod\"\r\n\r\nDELETE\r\n--B--\r\n"),
        multipart("--B\r\nContent-Disposition: form-data; name*0*=utf-8''%5Fme; name*1=thod\r\n\r\nPUT\r\n--B--\r\n"),
        multipart("--B\r\nContent-Disposition: form-data; name=\"a\"; name*0=_method\r\n\r\nPATCH\r\n--B--\r\n"),
        multipart(
            "--B\r\nContent-Disposition: form-data; name*0=\"_me\";\r\n name*1=\"thod\"\r\n\r\nDELETE\r\n--B--\r\n",
        ),
        // Go's blanks are Unicode's: a no-break space or an ideographic space before a name, a vertical tab or a
        // no-break space after one.
        multipart("--B\r\nContent-Disposition: form-data; name=\u{a0}_method\r\n\r\nDELETE\r\n--B--\r\n"),
        multipart("--B\r\nContent-Disposition: form-data; name=\u{3000}_method\r\n\r\nPUT\r\n--B--\r\n"),
        multipart("--B\r\nContent-Disposition: form-data; name=_method\x0b\r\n\r\nDELETE\r\n--B--\r\n"),
        multipart("--B\r\nContent-Disposition: form-data; name=_method\u{a0}\r\n\r\nPATCH\r\n--B--\r\n"),
    ]);
    let quoted = "--B\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--B--\r\n";
    for t in [
        "multipart/form-data; boundary=A; x=\"boundary=B\"",
        "Multipart/Form-Data; BOUNDARY=\"B\"",
        "multipart/form-data; xboundary=B",
        // Go decodes RFC 2231's `boundary*`; PHP reads `utf-8''B`, Rack nothing.
        "multipart/form-data; boundary*=utf-8''B",
        // Go reads a bare boundary as a token, dropping the blanks after it; PHP and Rack read `B `.
        "multipart/form-data; boundary=B ;x=1",
    ] {
        out.push((form(t), quoted.as_bytes().to_vec()));
    }
    out
}

/// Bodies in a content coding (`Content-Type`, body, `Content-Encoding`), which Express's body-parser decodes
/// (gzip and deflate; br in Express 5): `_method=DELETE` and `{"_method":"PUT"}`, compressed by Node.js's zlib.
fn encoded() -> Vec<(Option<String>, Vec<u8>, &'static str)> {
    let hex = |h: &str| -> Vec<u8> {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex"))
            .collect()
    };
    let form = Some("application/x-www-form-urlencoded".to_owned());
    let json = Some("application/json".to_owned());
    vec![
        (
            form.clone(),
            hex("1f8b08000000000000038bcf4d2dc9c84fb17571f5710d71050065fc26b00e000000"),
            "gzip",
        ),
        (
            form.clone(),
            hex("789c8bcf4d2dc9c84fb17571f5710d710500272004d1"),
            "deflate",
        ),
        (form.clone(), hex("1b0d00f8a57abe82910a43a78460"), "br"),
        (
            form,
            hex("1f8b08000000000000038bcf4d2dc9c84fb17571f5710d71050065fc26b00e000000"),
            "GZIP",
        ),
        (
            json.clone(),
            hex("1f8b0800000000000003ab568acf4d2dc9c84f51b2520a080d51aa05006540cb4d11000000"),
            "gzip",
        ),
        (
            json.clone(),
            hex("789cab568acf4d2dc9c84f51b2520a080d51aa050034d90594"),
            "deflate",
        ),
        (json, hex("0b08807b225f6d6574686f64223a22505554227d03"), "br"),
    ]
}

/// `corpus()` mutated `rounds` times over, the same every run (a fixed seed): pieces that parsers read differently
/// inserted, deleted or swapped in at random places, and the `Content-Type` varied.
fn mutated(rounds: usize) -> Vec<(Option<String>, Vec<u8>)> {
    const PIECES: &[&[u8]] = &[
        b"\r",
        b"\n",
        b"\r\n",
        b"\r\n\r\n",
        b"\n\n",
        b"--B",
        b"--B--",
        b"-",
        b";",
        b",",
        b"=",
        b"\"",
        b"'",
        b" ",
        b"\t",
        b"\\",
        b"name",
        b" name=",
        b"_method",
        b"%5F",
        b"+",
        b"&",
        b"DELETE",
        b"PUT",
        b"Content-Disposition: ",
        b"Content-ID: ",
        b"form-data; name=\"_method\"",
        b"filename=\"x\"",
        b"[",
        b".",
        b"]",
        b"\x0b",
        b"\0",
        b": ",
        b" --B",
        b"\r\n\r\n--B\r\n",
        b"\xef\xbb\xbf",
        b"[]",
        b"%",
        b"{",
        b"}",
        b"[0]",
        b"; name*0=",
        b"; name*1*=",
        b"\r\n ",
        "\u{a0}".as_bytes(),
    ];
    const TYPES: &[&str] = &[
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=B",
        "multipart/form-data; boundary=\"B\"",
        "multipart/mixed; boundary=B",
        "Multipart/Form-Data;boundary=B",
        "application/x-www-form-urlencoded; charset=utf-8",
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
    ];
    let seeds = corpus();
    let mut state: u64 = std::env::var("MUTATION_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s != 0)
        .unwrap_or(0x9E37_79B9_7F4A_7C15);
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    (0..rounds)
        .map(|_| {
            let (t, mut body) = seeds[next(seeds.len())].clone();
            for _ in 0..1 + next(3) {
                let at = next(body.len() + 1);
                match next(3) {
                    0 => body
                        .splice(at..at, PIECES[next(PIECES.len())].iter().copied())
                        .for_each(drop),
                    1 if at < body.len() => {
                        let end = (at + 1 + next(4)).min(body.len());
                        body.drain(at..end);
                    }
                    _ if at < body.len() => {
                        let end = (at + 1 + next(6)).min(body.len());
                        body.splice(at..end, PIECES[next(PIECES.len())].iter().copied())
                            .for_each(drop);
                    }
                    _ => {}
                }
            }
            let t = if next(4) == 0 {
                Some(TYPES[next(TYPES.len())].to_owned())
            } else {
                t
            };
            (t, body)
        })
        .collect()
}

/// The method the app took a request as, from its answer; empty when it took none (it failed on the request, as
/// Symfony does on a `_method` that is no method).
async fn method_of(r: reqwest::Response) -> String {
    if r.status() != StatusCode::OK {
        return String::new();
    }
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    v["method"].as_str().unwrap_or_default().to_owned()
}

async fn post(client: &reqwest::Client, url: &str, sample: &Sample) -> reqwest::Response {
    let (content_type, body, encoding) = sample;
    let mut req = client
        .post(url)
        .header("accept", "application/json")
        .body(body.to_vec());
    if let Some(t) = content_type {
        req = req.header("content-type", t);
    }
    if let Some(coding) = encoding {
        req = req.header("content-encoding", *coding);
    }
    req.send().await.expect("an answer")
}

async fn bob_before(app: &FrameworkApp, edit: impl FnOnce(String) -> String) -> (Idp, TestGate, Browser) {
    let idp = Idp::start(IdpOptions::default());
    let gate = TestGate::start_edited(&idp, &app.url(), "", RULES, edit).await;
    let bob = Browser::new(&idp);
    bob.login_as("bob");
    bob.sign_in(&gate, "/home").await;
    (idp, gate, bob)
}

/// A request body to send: its `Content-Type`, its bytes, its `Content-Encoding`.
type Sample = (Option<String>, Vec<u8>, Option<&'static str>);

/// Posts every sample of `corpus` to `url` as `client`: one line for each the app took as a method the rules refuse
/// Bob.
async fn refused_methods_reached(client: &reqwest::Client, url: &str, corpus: &[Sample]) -> Vec<String> {
    let mut passed = Vec::new();
    for sample in corpus {
        let r = post(client, url, sample).await;
        let status = r.status();
        // The gate's refusals (403, 400, 413, 415), or the app's answer: a failure, or a method Bob may use.
        let m = method_of(r).await;
        if REFUSED.contains(&m.as_str()) {
            let (t, body, coding) = sample;
            let body = String::from_utf8_lossy(body);
            passed.push(format!("{t:?} {coding:?} {body:?}: the app took it as {m} ({status})"));
        }
    }
    passed
}

async fn no_refused_method_reaches(app: FrameworkApp) {
    let mutated = mutated(
        std::env::var("MUTATED")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(200),
    );
    let corpus: Vec<Sample> = (corpus().into_iter().chain(mutated))
        .map(|(t, body)| (t, body, None))
        .chain(encoded().into_iter().map(|(t, body, coding)| (t, body, Some(coding))))
        .collect();
    let direct = reqwest::Client::new();
    let mut overridden = 0;
    for sample in &corpus {
        let m = method_of(post(&direct, &format!("{}/items/1", app.url()), sample).await).await;
        overridden += usize::from(REFUSED.contains(&m.as_str()));
    }
    assert!(
        overridden >= 10,
        "{}: the corpus overrides the method only {overridden} times",
        app.name
    );

    let (_idp, gate, bob) = bob_before(&app, |t| t).await;
    let url = format!("{}/items/1", gate.url());
    let passed = refused_methods_reached(&bob.client, &url, &corpus).await;
    assert!(
        passed.is_empty(),
        "{}: {} bodies passed:\n{}",
        app.name,
        passed.len(),
        passed.join("\n")
    );
    // A plain form still reaches the app, as a POST.
    let plain = (Some("application/x-www-form-urlencoded".into()), b"a=1".to_vec(), None);
    let r = post(&bob.client, &url, &plain).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(method_of(r).await, "POST");

    // Without the reading, the same corpus reaches the app as the methods the rules refuse Bob.
    let (_idp, gate, bob) = bob_before(&app, in_upstream("read_form_method = false")).await;
    let url = format!("{}/items/1", gate.url());
    let refused_reached = refused_methods_reached(&bob.client, &url, &corpus).await.len();
    assert!(
        refused_reached >= 10,
        "{}: only {refused_reached} reached the app unread",
        app.name
    );
}

#[tokio::test]
async fn rails_rack_method_override_gets_no_refused_method() {
    if let Some(app) = FrameworkApp::rack().await {
        no_refused_method_reaches(app).await;
    }
}

#[tokio::test]
async fn express_method_override_gets_no_refused_method() {
    no_refused_method_reaches(FrameworkApp::express(5).await).await;
}

#[tokio::test]
async fn express4_method_override_gets_no_refused_method() {
    no_refused_method_reaches(FrameworkApp::express(4).await).await;
}

#[tokio::test]
async fn go_method_override_gets_no_refused_method() {
    if let Some(app) = FrameworkApp::go().await {
        no_refused_method_reaches(app).await;
    }
}

#[tokio::test]
async fn symfony_method_override_gets_no_refused_method() {
    if let Some(app) = FrameworkApp::symfony().await {
        no_refused_method_reaches(app).await;
    }
}

/// Forward-auth is sent no body, and the proxy passes the body on: behind the shipped nginx the gate cannot read a
/// form's `_method`. Where the rules would refuse the client a method a body could name, a `POST` whose body a
/// framework reads one from is refused as that method would be (403, nginx's own 403 then), unless
/// `upstream.read_form_method = false` says the app reads none; a body no framework reads one from passes, and so does
/// an admin's. Before, the corpus reached Rails' Rack as the methods the rules refuse Bob.
#[tokio::test]
async fn behind_nginx_no_refused_method_reaches_rails() {
    let Some(app) = FrameworkApp::rack().await else {
        return;
    };
    if !have_tool("nginx", &["/usr/sbin/nginx", "/usr/bin/nginx"], "nginx") {
        return;
    }
    let app_addr = format!("127.0.0.1:{}", app.port);
    let through = |edit: fn(String) -> String| {
        let app_addr = app_addr.clone();
        async move {
            let port = free_port();
            let (idp, _upstream, gate) =
                crate::forward_auth::gate_behind_a_proxy(port, IdpOptions::default(), "", RULES, edit).await;
            let nginx = crate::forward_auth::the_shipped_nginx(port, &gate, &app_addr).await;
            let bob = Browser::new(&idp);
            bob.login_as("bob");
            let (_, home) = bob.navigate(&format!("{}/home", nginx.url())).await;
            assert_eq!(home.status(), StatusCode::OK, "bob signs in through nginx");
            (idp, gate, nginx, bob)
        }
    };
    let corpus: Vec<Sample> = corpus()
        .into_iter()
        .chain(mutated(40))
        .map(|(t, body)| (t, body, None))
        .collect();

    let (idp, _gate, nginx, bob) = through(|t| t).await;
    let url = format!("{}/items/1", nginx.url());
    let passed = refused_methods_reached(&bob.client, &url, &corpus).await;
    assert!(
        passed.is_empty(),
        "{} bodies passed:\n{}",
        passed.len(),
        passed.join("\n")
    );
    // A form Bob may send as a POST is refused too: the gate cannot see that it names no other method.
    let plain = (Some("application/x-www-form-urlencoded".into()), b"a=1".to_vec(), None);
    assert_eq!(post(&bob.client, &url, &plain).await.status(), StatusCode::FORBIDDEN);
    // A body no framework reads a `_method` from passes, as a POST.
    let text = (Some("text/plain".into()), b"_method=DELETE".to_vec(), None);
    let r = post(&bob.client, &url, &text).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(method_of(r).await, "POST");
    // Alice, an admin, may use every method: her forms pass, and are taken as they say.
    let alice = Browser::new(&idp);
    let (_, home) = alice.navigate(&format!("{}/home", nginx.url())).await;
    assert_eq!(home.status(), StatusCode::OK);
    let delete = (
        Some("application/x-www-form-urlencoded".into()),
        b"_method=DELETE".to_vec(),
        None,
    );
    let r = post(&alice.client, &url, &delete).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(method_of(r).await, "DELETE");

    // An operator whose app reads no `_method` from bodies says so: Bob's forms pass as POSTs (and Rails takes them
    // as what they name, as that operator was told).
    let (_idp, _gate, nginx, bob) = through(|t| in_upstream("read_form_method = false")(t)).await;
    let url = format!("{}/items/1", nginx.url());
    let r = post(&bob.client, &url, &plain).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(method_of(r).await, "POST");
    let r = post(&bob.client, &url, &delete).await;
    assert_eq!(method_of(r).await, "DELETE");
}

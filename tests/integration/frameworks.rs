//! A form's `_method` against real frameworks: Rack's `MethodOverride` (Rails) and Symfony's HttpFoundation
//! (Laravel, Symfony) behind the gate, each answering the method it took a request as. For every body of a corpus
//! of form, multipart and JSON spellings (the edges where parsers differ among them), the gate must not let Bob
//! reach a method the rules refuse him: whatever the app took a request the gate passed as, he may use.

use reqwest::StatusCode;

use crate::support::frameworks::FrameworkApp;
use crate::support::*;

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
    ]);
    let quoted = "--B\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--B--\r\n";
    for t in [
        "multipart/form-data; boundary=A; x=\"boundary=B\"",
        "Multipart/Form-Data; BOUNDARY=\"B\"",
        "multipart/form-data; xboundary=B",
    ] {
        out.push((form(t), quoted.as_bytes().to_vec()));
    }
    out
}

/// The method `app` took a request as, from its answer.
async fn method_of(r: reqwest::Response) -> String {
    let v: serde_json::Value = r.json().await.expect("the app's JSON");
    v["method"].as_str().unwrap_or_default().to_owned()
}

async fn post(client: &reqwest::Client, url: &str, content_type: &Option<String>, body: &[u8]) -> reqwest::Response {
    let mut req = client
        .post(url)
        .header("accept", "application/json")
        .body(body.to_vec());
    if let Some(t) = content_type {
        req = req.header("content-type", t);
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

async fn no_refused_method_reaches(app: FrameworkApp) {
    let corpus = corpus();
    let direct = reqwest::Client::new();
    let mut overridden = 0;
    for (t, body) in &corpus {
        let m = method_of(post(&direct, &format!("{}/items/1", app.url()), t, body).await).await;
        overridden += usize::from(m != "POST");
    }
    assert!(
        overridden >= 10,
        "{}: the corpus overrides the method only {overridden} times",
        app.name
    );

    let (_idp, gate, bob) = bob_before(&app, |t| t).await;
    let url = format!("{}/items/1", gate.url());
    for (t, body) in &corpus {
        let r = post(&bob.client, &url, t, body).await;
        let status = r.status();
        let what = format!("{}: {t:?} {:?}", app.name, String::from_utf8_lossy(body));
        match status {
            StatusCode::OK => {
                let m = method_of(r).await;
                assert!(matches!(m.as_str(), "POST" | "GET"), "{what}: the app took it as {m}");
            }
            StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST => {}
            other => panic!("{what}: {other}"),
        }
    }
    // A plain form still reaches the app, as a POST.
    let r = post(
        &bob.client,
        &url,
        &Some("application/x-www-form-urlencoded".into()),
        b"a=1",
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(method_of(r).await, "POST");

    // Without the reading, the same corpus reaches the app as the methods the rules refuse Bob.
    let (_idp, gate, bob) = bob_before(&app, in_upstream("read_form_method = false")).await;
    let url = format!("{}/items/1", gate.url());
    let mut refused_reached = 0;
    for (t, body) in &corpus {
        let r = post(&bob.client, &url, t, body).await;
        if r.status() == StatusCode::OK && !matches!(method_of(r).await.as_str(), "POST" | "GET") {
            refused_reached += 1;
        }
    }
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
async fn symfony_method_override_gets_no_refused_method() {
    if let Some(app) = FrameworkApp::symfony().await {
        no_refused_method_reaches(app).await;
    }
}

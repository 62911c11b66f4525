use http::HeaderName;

use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
    }
    map
}

fn ask(dialect: Dialect, path: &str, pairs: &[(&str, &str)]) -> Result<Original, QuestionError> {
    read(dialect, &Method::GET, &path.parse().unwrap(), &headers(pairs))
}

const FORWARDED: [(&str, &str); 4] = [
    ("x-forwarded-method", "POST"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "App.Example.com:8443"),
    ("x-forwarded-uri", "/admin/../x?a=1"),
];

#[test]
fn dialects_are_exact_paths() {
    assert_eq!(Dialect::of("/.stepgate/authz/nginx"), Some(Dialect::Nginx));
    assert_eq!(Dialect::of("/.stepgate/authz/forward"), Some(Dialect::Forward));
    assert_eq!(Dialect::of("/.stepgate/authz/envoy"), Some(Dialect::Envoy));
    assert_eq!(Dialect::of("/.stepgate/authz/envoy/admin"), Some(Dialect::Envoy));
    for other in ["/.stepgate/authz", "/.stepgate/authz/nginx/", "/.stepgate/authz/envoyx", "/.stepgate/authz/NGINX", "/admin"] {
        assert_eq!(Dialect::of(other), None, "{other}");
    }
}

#[test]
fn forwarded_headers_give_the_request_unchanged() {
    let original = ask(Dialect::Forward, FORWARD, &FORWARDED).unwrap();
    assert_eq!(original.method, Method::POST);
    assert!(original.https);
    assert_eq!((original.host.as_str(), original.authority.as_str()), ("app.example.com", "App.Example.com:8443"));
    assert_eq!(original.uri, "/admin/../x?a=1", "the edge canonicalises it, as any request");
    assert_eq!(original.url(), "https://App.Example.com:8443/admin/../x?a=1");
    assert_eq!(ask(Dialect::Nginx, NGINX, &FORWARDED).unwrap(), original, "nginx may send the same headers");
}

#[test]
fn nginx_original_url_and_method() {
    let asked = [("x-original-url", "http://wiki.test/a%2Fb?q=%20"), ("x-original-method", "DELETE")];
    let original = ask(Dialect::Nginx, NGINX, &asked).unwrap();
    assert_eq!((original.method, original.https, original.host.as_str()), (Method::DELETE, false, "wiki.test"));
    assert_eq!(original.uri, "/a%2Fb?q=%20");
    let without_method = ask(Dialect::Nginx, NGINX, &asked[..1]).unwrap_err();
    assert_eq!(without_method, QuestionError::Missing("x-forwarded-method"));
}

#[test]
fn envoy_appends_the_original_path() {
    let asked = [("host", "api.test"), ("x-forwarded-proto", "http")];
    let original = read(Dialect::Envoy, &Method::PUT, &"/.stepgate/authz/envoy/v1/items?x=1".parse().unwrap(), &headers(&asked)).unwrap();
    assert_eq!((original.method, original.uri.to_string()), (Method::PUT, "/v1/items?x=1".to_string()));
    let root = read(Dialect::Envoy, &Method::GET, &"/.stepgate/authz/envoy".parse().unwrap(), &headers(&asked)).unwrap();
    assert_eq!(root.uri, "/");
}

#[test]
fn missing_repeated_and_malformed_headers_are_refused() {
    let without = |name: &str| FORWARDED.iter().copied().filter(|(n, _)| *n != name).collect::<Vec<_>>();
    let with = |name: &'static str, value: &'static str| {
        let mut pairs = without(name);
        pairs.push((name, value));
        pairs
    };
    let twice = |name: &'static str| {
        let mut pairs = FORWARDED.to_vec();
        pairs.push(*FORWARDED.iter().find(|(n, _)| *n == name).unwrap());
        pairs
    };
    let cases: Vec<(Vec<(&str, &str)>, QuestionError)> = vec![
        (without("x-forwarded-host"), QuestionError::Missing("x-forwarded-host")),
        (without("x-forwarded-uri"), QuestionError::Missing("x-forwarded-uri")),
        (without("x-forwarded-method"), QuestionError::Missing("x-forwarded-method")),
        (without("x-forwarded-proto"), QuestionError::Missing("x-forwarded-proto")),
        (twice("x-forwarded-host"), QuestionError::Repeated("x-forwarded-host")),
        (twice("x-forwarded-uri"), QuestionError::Repeated("x-forwarded-uri")),
        (with("x-forwarded-host", "a.test, b.test"), QuestionError::Repeated("x-forwarded-host")),
        (with("x-forwarded-proto", "https,http"), QuestionError::Repeated("x-forwarded-proto")),
        (with("x-forwarded-proto", "ftp"), QuestionError::Malformed("x-forwarded-proto")),
        (with("x-forwarded-host", "user@a.test"), QuestionError::Malformed("x-forwarded-host")),
        (with("x-forwarded-host", "a.test:x"), QuestionError::Malformed("x-forwarded-host")),
        (with("x-forwarded-uri", "http://evil.test/x"), QuestionError::Malformed("x-forwarded-uri")),
        (with("x-forwarded-uri", "admin"), QuestionError::Malformed("x-forwarded-uri")),
        (with("x-forwarded-method", "G ET"), QuestionError::Malformed("x-forwarded-method")),
    ];
    for (pairs, expected) in cases {
        assert_eq!(ask(Dialect::Forward, FORWARD, &pairs), Err(expected.clone()), "{pairs:?}");
    }
    let bad_url = [("x-original-url", "ftp://a.test/"), ("x-original-method", "GET")];
    assert_eq!(ask(Dialect::Nginx, NGINX, &bad_url), Err(QuestionError::Malformed("x-original-url")));
    let relative = [("x-original-url", "/x"), ("x-original-method", "GET")];
    assert_eq!(ask(Dialect::Nginx, NGINX, &relative), Err(QuestionError::Malformed("x-original-url")));
    let two_hosts = headers(&[("host", "a.test"), ("host", "b.test"), ("x-forwarded-proto", "http")]);
    let envoy = read(Dialect::Envoy, &Method::GET, &ENVOY.parse().unwrap(), &two_hosts);
    assert_eq!(envoy, Err(QuestionError::Repeated("host")));
}

#[test]
fn the_original_headers_leave_out_the_question() {
    let mut asked = FORWARDED.to_vec();
    asked.extend([("cookie", "a=1"), ("x-env", "prod"), ("x-forwarded-for", "192.0.2.1"), ("content-length", "0")]);
    let own = original_headers(&headers(&asked));
    let mut names: Vec<&str> = own.keys().map(|name| name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["cookie", "x-env"]);
}

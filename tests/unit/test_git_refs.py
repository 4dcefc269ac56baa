"""A git server's ref advertisement read as hostile input; revisions and credentials."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from lamina.api.image import GitContext
from lamina.domain.git_refs import (
    MAX_ADVERTISEMENT,
    MAX_REFS,
    Advertisement,
    GitRefsError,
    authorization_from_secret,
    basic_authorization,
    git_target,
    parse_advertisement,
    parse_pkt_lines,
    resolve_revision,
)

A = "a" * 40
B = "b" * 40
C = "c" * 40
T = "d" * 40  # an annotated tag object
ZERO = "0" * 40
CAPS = b"multi_ack side-band-64k symref=HEAD:refs/heads/main object-format=sha1 agent=git/2.39"


def pkt(payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return b"%04x" % (len(data) + 4) + data


FLUSH = b"0000"
SERVICE = pkt("# service=git-upload-pack\n") + FLUSH


def advertisement(*lines: bytes, service: bool = True) -> bytes:
    return (SERVICE if service else b"") + b"".join(lines) + FLUSH


def first_line(object_id: str, name: str, caps: bytes = CAPS) -> bytes:
    return pkt(object_id.encode() + b" " + name.encode() + b"\0" + caps + b"\n")


GOOD = advertisement(
    first_line(A, "HEAD"),
    pkt(f"{A} refs/heads/main\n"),
    pkt(f"{B} refs/heads/feature/x\n"),
    pkt(f"{T} refs/tags/v1\n"),
    pkt(f"{C} refs/tags/v1^{{}}\n"),
    pkt(f"{B} refs/tags/light\n"),
)


def test_a_smart_http_advertisement_gives_refs_peeled_tags_and_head() -> None:
    parsed = parse_advertisement(GOOD, smart_http=True)
    assert parsed.refs == {
        "HEAD": A,
        "refs/heads/main": A,
        "refs/heads/feature/x": B,
        "refs/tags/v1": T,
        "refs/tags/light": B,
    }
    assert parsed.peeled == {"refs/tags/v1": C}
    assert parsed.head_target == "refs/heads/main"


def test_git_protocol_and_protocol_v1_and_empty_repositories() -> None:
    plain = advertisement(first_line(A, "refs/heads/main"), service=False)
    assert parse_advertisement(plain, smart_http=False).refs == {"refs/heads/main": A}
    v1 = advertisement(pkt("version 1\n"), first_line(A, "refs/heads/main"))
    assert parse_advertisement(v1, smart_http=True).refs == {"refs/heads/main": A}
    empty = advertisement(first_line(ZERO, "capabilities^{}"))
    parsed = parse_advertisement(empty, smart_http=True)
    assert parsed.refs == {}
    with pytest.raises(GitRefsError, match="the repository is empty") as refused:
        resolve_revision(parsed, "main")
    assert refused.value.reason == "GitRevisionNotFound"


def test_sha256_repositories_are_read() -> None:
    long_id = "e" * 64
    data = advertisement(first_line(long_id, "refs/heads/main"))
    assert parse_advertisement(data, smart_http=True).refs == {"refs/heads/main": long_id}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"00zz", "is not hex"),
        (b"0003", "length 3 at byte 0 is reserved"),
        (b"0001", "length 1 at byte 0 is reserved"),
        (b"fff1" + b"x" * 65600, "exceeds 65520"),
        (b"0010abc", "says 16 bytes, 7 remain"),
        (b"00", "truncated pkt-line length"),
        (b"0000" * 2 + b"0", "truncated pkt-line length"),
    ],
)
def test_malformed_pkt_lines_are_refused_by_name(data: bytes, message: str) -> None:
    with pytest.raises(GitRefsError, match=message) as refused:
        parse_pkt_lines(data)
    assert refused.value.reason == "GitProtocolError"


def test_a_flood_is_refused_not_truncated() -> None:
    with pytest.raises(GitRefsError, match=f"larger than {MAX_ADVERTISEMENT} bytes"):
        parse_pkt_lines(b"0004" * (MAX_ADVERTISEMENT // 4 + 1))
    with pytest.raises(GitRefsError, match="more than 10 lines"):
        parse_pkt_lines(b"0004" * 11, limit=10)
    many = advertisement(
        first_line(A, "refs/heads/b0"),
        *(pkt(f"{A} refs/heads/b{i}\n") for i in range(1, MAX_REFS + 1)),
    )
    with pytest.raises(GitRefsError, match="more than"):
        parse_advertisement(many, smart_http=True)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (advertisement(first_line(A, "HEAD"), service=False), "no '# service=git-upload-pack'"),
        (pkt("# service=git-upload-pack\n") + first_line(A, "HEAD"), "not followed by a flush"),
        (b"", "no '# service=git-upload-pack' header; got '<flush>'"),
        (
            b"<html>" + b"x" * 200,  # a web page where the advertisement should be
            "is not hex",
        ),
        (SERVICE + first_line(A, "HEAD"), "ends without a flush"),
        (
            advertisement(first_line(A, "HEAD"), pkt(f"{B} refs/heads/x\0caps\n")),
            "after the first carries capabilities",
        ),
        (advertisement(pkt(f"{A[:-1]}Z refs/heads/main\0\n")), "is not an object id"),
        (advertisement(pkt(f"{A.upper()} refs/heads/main\0\n")), "is not an object id"),
        (advertisement(pkt(f"{A}\n refs/heads/main\0\n")), "is not an object id"),
        (advertisement(pkt(f"{A} refs/heads/main\n\0\n")), "is malformed"),
        (
            advertisement(pkt(f"{A} refs/heads/ma\x1bin\0\n")),
            "ref name 'refs/heads/ma.in' is malformed",
        ),
        (advertisement(pkt(f"{A} refs/heads/a b\0\n")), "is not '<id> <name>'"),
        (advertisement(pkt(f"{A}refs/heads/main\0\n")), "is not '<id> <name>'"),
        (advertisement(pkt(f"{A} " + "r" * 2000 + "\0\n")), "is malformed"),
        (advertisement(pkt(b"\xff" * 41 + b" x\0\n")), "is not ASCII"),
        (advertisement(pkt("ERR access denied\n")), "the server said 'access denied'"),
        (
            advertisement(first_line(A, "HEAD"), pkt(f"{C} refs/tags/v9^{{}}\n")),
            "follows no tag",
        ),
        (advertisement(first_line(A, "capabilities^{}")), "capabilities\\^\\{\\} names an object"),
    ],
)
def test_hostile_advertisements_are_refused_by_name(data: bytes, message: str) -> None:
    with pytest.raises(GitRefsError, match=message) as refused:
        parse_advertisement(data, smart_http=True)
    assert refused.value.reason == "GitProtocolError"
    assert len(str(refused.value)) < 200  # an excerpt, never the server's whole answer


def test_an_excerpt_of_hostile_bytes_is_short_and_printable() -> None:
    noise = "\x00\x07\u202e" + "z" * 500
    with pytest.raises(GitRefsError) as refused:
        parse_advertisement(advertisement(pkt(f"ERR {noise}\n")), smart_http=True)
    said = str(refused.value)
    assert said.isprintable() and "\u202e" not in said and len(said) < 120


@pytest.mark.parametrize(
    ("revision", "commit"),
    [
        ("main", A),
        ("feature/x", B),
        ("v1", C),  # an annotated tag: the commit it points at, not the tag object
        ("light", B),
        ("refs/tags/v1", C),
        ("refs/heads/main", A),
        ("HEAD", A),
        (C, C),  # a full id is taken as is (the build's fetch checks it exists)
        (C.upper(), C),
    ],
)
def test_revisions_resolve_like_clone_branch(revision: str, commit: str) -> None:
    assert resolve_revision(parse_advertisement(GOOD, smart_http=True), revision) == commit


def test_a_branch_wins_over_a_tag_of_the_same_name_and_head_follows_its_symref() -> None:
    both = Advertisement({"refs/heads/x": A, "refs/tags/x": B, "refs/heads/main": C}, {}, None)
    assert resolve_revision(both, "x") == A
    no_head = Advertisement({"refs/heads/main": C}, {}, "refs/heads/main")
    assert resolve_revision(no_head, "HEAD") == C


@pytest.mark.parametrize(
    ("revision", "message"),
    [
        ("nope", "advertises no refs/heads/nope or refs/tags/nope$"),
        ("abc1234", "abbreviated commit id cannot be resolved remotely"),
        ("main~1", "revision expressions cannot be resolved remotely"),
        ("refs/pull/1/head", "advertises no refs/pull/1/head$"),
    ],
)
def test_unresolvable_revisions_say_why(revision: str, message: str) -> None:
    with pytest.raises(GitRefsError, match=message) as refused:
        resolve_revision(parse_advertisement(GOOD, smart_http=True), revision)
    assert refused.value.reason == "GitRevisionNotFound"


def test_targets_of_clone_urls() -> None:
    http = git_target("http://10.0.0.1:8080/team/app.git/")
    assert (http.host, http.port, http.refs_url) == (
        "10.0.0.1",
        8080,
        "http://10.0.0.1:8080/team/app.git/info/refs?service=git-upload-pack",
    )
    assert git_target("https://example.com/a").port == 443
    daemon = git_target("git://example.com/a.git")
    assert (daemon.port, daemon.path, daemon.refs_url) == (9418, "/a.git", None)
    for bad in ("ssh://example.com/a", "https://u:p@example.com/a", "https://e.com/a?x=1"):
        with pytest.raises(GitRefsError):
            git_target(bad)
    with pytest.raises(GitRefsError, match="invalid port"):
        git_target("http://example.com:99999/a")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_credentials_from_a_secret() -> None:
    basic = {"data": {"username": b64("robot"), "password": b64("pw")}}
    assert authorization_from_secret(basic, "ns", "s") == "Basic " + b64("robot:pw")
    token = {"data": {"token": b64("t0k")}}
    assert authorization_from_secret(token, "ns", "s") == "Basic " + b64("x-access-token:t0k")
    named = {"data": {"token": b64("t0k"), "username": b64("oauth2")}}
    assert authorization_from_secret(named, "ns", "s") == "Basic " + b64("oauth2:t0k")


@pytest.mark.parametrize(
    ("secret", "reason", "message"),
    [
        (None, "GitCredentialsNotFound", 'Secret "s" not found in namespace "ns"'),
        ({"data": {}}, "GitCredentialsInvalid", "neither username and password nor token"),
        ({"data": {"username": b64("u")}}, "GitCredentialsInvalid", "neither"),
        (
            {"data": {"username": b64("u"), "password": b64("p\r\nX-Evil: 1")}},
            "GitCredentialsInvalid",
            "password contains control characters",
        ),
        (
            {"data": {"username": b64("a:b"), "password": b64("p")}},
            "GitCredentialsInvalid",
            "username contains ':'",
        ),
        ({"data": {"token": "!!notbase64"}}, "GitCredentialsInvalid", "token is not UTF-8"),
        ({"data": {"token": b64("")}}, "GitCredentialsInvalid", "password is empty"),
        ({"data": {"token": "QQ" * 5000}}, "GitCredentialsInvalid", "token is too long"),
    ],
)
def test_unusable_credentials_are_refused_without_their_values(
    secret: dict[str, dict[str, str]] | None, reason: str, message: str
) -> None:
    with pytest.raises(GitRefsError, match=message) as refused:
        authorization_from_secret(secret, "ns", "s")
    assert refused.value.reason == reason
    assert "X-Evil" not in str(refused.value)


def test_basic_authorization_refuses_header_breaking_values() -> None:
    with pytest.raises(GitRefsError):
        basic_authorization("u\n", "p")
    assert basic_authorization("u", "p:with:colons") == "Basic " + b64("u:p:with:colons")


@pytest.mark.parametrize(
    "url",
    [
        "ssh://git@example.com/r.git",  # not resolvable by the operator: refused, not ignored
        "https://user:pw@example.com/r.git",  # credentials would be written into the image
        "https://token@example.com/r.git",
        "https://example.com/r.git?ref=x",
        "https://example.com/r.git#main",
        "ext::sh -c evil",
        "file:///etc",
        "--upload-pack=x",
        "https://example.com/r\x00.git",
    ],
)
def test_the_schema_admits_only_urls_the_operator_resolves_without_credentials(url: str) -> None:
    with pytest.raises(ValidationError):
        GitContext(url=url)


@pytest.mark.parametrize(
    "url",
    ["https://example.com/r.git", "http://10.0.0.1:8080/team/app.git", "git://h/a", "https://h"],
)
def test_the_schema_admits_clone_urls(url: str) -> None:
    assert git_target(GitContext(url=url).url).host

"""Endpoint error bodies are summarised in one line, never pasted (clampdown_aws.base)."""

from __future__ import annotations

from botocore.exceptions import ClientError
from botocore.parsers import ResponseParserError

from clampdown_aws.base import (
    MAX_ERROR_TEXT,
    AwsAccessDenied,
    AwsActionError,
    summarize_error_text,
    translate,
)

WERKZEUG_500 = (
    "<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n"
    "<h1>Internal Server Error</h1>\n<p>The server encountered an internal error and was "
    "unable to complete your request.</p>\n"
)
NGINX_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n"
    "</html>\r\n"
)


def client_error(code: str, message: str, status: int, content_type: str = "") -> ClientError:
    response = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {
            "HTTPStatusCode": status,
            "HTTPHeaders": {"content-type": content_type} if content_type else {},
        },
    }
    return ClientError(response, "LookupEvents")  # type: ignore[arg-type]


def test_an_html_page_becomes_its_status_and_title():
    assert summarize_error_text(WERKZEUG_500, 500) == (
        "HTTP 500: an HTML error page titled '500 Internal Server Error' (body not shown)"
    )
    assert summarize_error_text(NGINX_502, 502, "text/html") == (
        "HTTP 502: an HTML error page titled '502 Bad Gateway' (body not shown)"
    )


def test_an_html_page_without_a_title_uses_its_heading_or_says_so():
    assert summarize_error_text("<html><body><h1>Gateway\n  Timeout</h1></body></html>", 504) == (
        "HTTP 504: an HTML error page titled 'Gateway Timeout' (body not shown)"
    )
    assert summarize_error_text("<html><body>oops</body></html>") == (
        "an HTML error page (body not shown)"
    )


def test_a_content_type_of_html_is_enough_to_hide_the_body():
    assert "body not shown" in summarize_error_text(
        "Service down, see status page", 503, "text/html"
    )


def test_text_keeps_its_first_line_cut_to_the_limit():
    assert summarize_error_text("Rate exceeded\nrequest id 42") == "Rate exceeded …"
    long = summarize_error_text("x" * 5000)
    assert len(long) == MAX_ERROR_TEXT and long.endswith("…")
    assert summarize_error_text("bell\x07 and\x1b[31m escapes") == "bell  and [31m escapes"
    assert summarize_error_text("", 500) == "HTTP 500"
    assert summarize_error_text("") == "no error text"


def test_translate_summarises_an_html_500_from_a_json_endpoint():
    # botocore puts the HTTP status as the code and the whole page as the message
    exc = client_error("500", WERKZEUG_500, 500, "text/html; charset=utf-8")
    translated = translate(exc, aws=None)  # type: ignore[arg-type]
    assert isinstance(translated, AwsActionError)
    assert str(translated) == (
        "LookupEvents failed: HTTP 500: an HTML error page titled "
        "'500 Internal Server Error' (body not shown)"
    )


def test_translate_keeps_an_aws_error_code_and_a_one_line_message():
    exc = client_error("ThrottlingException", "Rate exceeded\nmore", 400)
    assert str(translate(exc, aws=None)) == (  # type: ignore[arg-type]
        "LookupEvents failed: ThrottlingException: Rate exceeded …"
    )


def test_translate_still_names_an_access_denial_behind_an_xml_403():
    body = (
        "<ErrorResponse><Error><Code>AccessDenied</Code><Message>User: "
        "arn:aws:iam::123456789012:user/responder is not authorized to perform: "
        "cloudtrail:LookupEvents</Message></Error></ErrorResponse>"
    )
    translated = translate(client_error("403", body, 403), aws=None)  # type: ignore[arg-type]
    assert isinstance(translated, AwsAccessDenied)
    assert str(translated).startswith(
        "AccessDenied: arn:aws:iam::123456789012:user/responder may not call "
        "cloudtrail:LookupEvents"
    )


def test_translate_summarises_a_body_botocore_cannot_parse():
    exc = ResponseParserError(
        "Unable to parse response (syntax error), invalid XML received. Further retries may "
        f"succeed:\nb'{NGINX_502}'"
    )
    message = str(translate(exc, aws=None))  # type: ignore[arg-type]
    assert message == (
        "AWS answered with a body botocore cannot parse: an HTML error page titled "
        "'502 Bad Gateway' (body not shown)"
    )

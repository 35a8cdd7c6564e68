"""The OpenAPI schema: valid, without warnings, and covering every endpoint."""

import json
import re

import pytest
from django.core.management import call_command

from tre_audit.api.urls import v1
from tre_audit.inbox.api_urls import urlpatterns as inbox
from tre_audit.serving.urls import urlpatterns as serving


def _schema_path(route: str) -> str:
    return "/api/v1/" + re.sub(r"<\w+:(\w+)>", r"{\1}", route)


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    out = tmp_path_factory.mktemp("schema") / "schema.json"
    # --fail-on-warn: an endpoint whose serializer could not be inferred fails the test
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", "--file", out
    )
    return json.loads(out.read_text())


def test_every_endpoint_and_method_is_in_the_schema(schema):
    expected = {
        _schema_path(str(p.pattern)): {m for m in ("get", "post") if hasattr(p.callback.cls, m)}
        for p in [*v1, *serving, *inbox]
    }
    got = {path: set(ops) - {"parameters"} for path, ops in schema["paths"].items()}
    assert got == expected
    assert len(expected) == 16 + 8 + 3 + 3  # + record questions, + inbox, + MPC (info, open, close)


def test_every_operation_documents_its_success_and_errors(schema):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            assert codes & {"200", "201", "202", "204"}, (method, path)
            takes_input = method != "get" and "requestBody" in operation
            assert "400" in codes or not takes_input, (method, path)
            if path != "/api/v1/token/":
                assert "401" in codes, (method, path)


def test_binary_downloads_are_described_as_files(schema):
    pdf = schema["paths"]["/api/v1/requests/{submission_id}/report.pdf"]["get"]["responses"]
    zip_ = schema["paths"]["/api/v1/requests/{submission_id}/bundle.zip"]["get"]["responses"]
    assert pdf["200"]["content"]["application/pdf"]["schema"]["format"] == "binary"
    assert zip_["200"]["content"]["application/zip"]["schema"]["format"] == "binary"
    submit = schema["paths"]["/api/v1/requests/"]["post"]["requestBody"]["content"]
    fields = schema["components"]["schemas"]["SubmissionCreate"]["properties"]
    assert list(submit) == ["multipart/form-data"]
    assert fields["model"]["format"] == "binary" and "files_are_exact" in fields
    assert fields["declaration"]["format"] == "binary"  # an ONNX network's, optional
    required = schema["components"]["schemas"]["SubmissionCreate"]["required"]
    assert "declaration" not in required and "model" in required


@pytest.mark.django_db
def test_the_schema_and_its_docs_are_served(client):
    assert client.get("/api/schema/").status_code == 200
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"redoc" in docs.content.lower()

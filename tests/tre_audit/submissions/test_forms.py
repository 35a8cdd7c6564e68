"""Forms a person sees: required fields marked, errors at their field, uploads kept across
an error (and only the uploader's), the label chosen from the training file's columns."""

import hashlib
import html
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from attacks.intake import table_columns
from tests import factories
from tre_audit.reviews.enums import Role
from tre_audit.submissions.enums import Status
from tre_audit.submissions.kept import SESSION_KEY
from tre_audit.submissions.models import StoredFile, Submission

pytestmark = pytest.mark.django_db

CREATE = "/requests/new/"
DECLARATION = {
    "title": "Drug response SVC",
    "model_type": "SVC, RBF kernel",
    "preprocessing": "None",
    "purpose": "Teaching",
    "hosting": "public_file",
    "files_are_exact": "on",
}


def _files(example_files, **replaced):
    uploads = {role: SimpleUploadedFile(u.name, u.data) for role, u in example_files.items()}
    return uploads | replaced


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _field(page: str, name: str) -> str:
    """The container of one field as _field.html draws it."""
    match = re.search(rf'<div class="field[^"]*" id="id_{name}_field">(.*?)\n</div>', page, re.S)
    assert match, f"no field {name}"
    return match.group(1)


def _text(response) -> str:
    return html.unescape(response.content.decode())


@pytest.fixture
def researcher(client):
    user = factories.create_user("researcher", Role.RESEARCHER)
    client.force_login(user)
    return user


def test_required_fields_are_marked_and_the_label_offers_the_files_columns(client, researcher):
    page = _text(client.get(reverse("submissions:create")))
    assert '<span class="req" aria-hidden="true">*</span> required' in page
    assert re.search(r'<input [^>]*name="title"[^>]* required ', page)
    assert re.search(r'<input type="file" name="model" required ', _field(page, "model"))
    assert '<span class="req" aria-hidden="true"> *</span>' in _field(page, "title")
    assert '<span class="req"' not in _field(page, "project")  # optional
    label = _field(page, "label")
    assert 'list="id_label_columns"' in label and 'data-columns-of="id_train"' in label
    assert 'id="submit-form"' in page and 'action="/requests/new/#submit-form"' in page


def test_a_label_error_keeps_the_files_and_lists_the_columns(client, researcher, example_files):
    """About 4 s: the second post goes through the real sandboxed intake check, which is
    what shows that the kept files are the ones audited."""
    columns = table_columns(example_files["train"].data, filename=example_files["train"].name)
    response = client.post(CREATE, DECLARATION | {"label": "outcome"} | _files(example_files))
    page = _text(response)
    assert response.status_code == 400 and not Submission.objects.exists()
    label = _field(page, "label")
    assert "The training file has no column 'outcome'; its columns are" in label
    assert all(f"'{name}'" in label for name in columns[:20])
    assert 'aria-invalid="true"' in label and 'id="id_label_error" role="alert"' in label
    assert f'<option value="{columns[0]}">' in label and "<select" in label
    for role, upload in example_files.items():
        shown = _field(page, role)
        assert f"Kept: {upload.name}" in shown and _sha256(upload.data)[:12] in shown
        assert " required" not in shown.split("<input", 1)[1].split(">", 1)[0]

    again = client.post(CREATE, DECLARATION | {"label": "response"})  # no file chosen again
    submission = Submission.objects.get()
    assert again.status_code == 302 and again.url == submission.get_absolute_url()
    stored = {f.role: f.stored_id for f in submission.files.all()}
    assert stored == {role: _sha256(u.data) for role, u in example_files.items()}
    assert SESSION_KEY not in client.session or "create" not in client.session[SESSION_KEY]


def test_a_kept_file_is_the_uploaders_only(client, researcher, example_files):
    client.post(CREATE, DECLARATION | {"label": "outcome"} | _files(example_files))
    kept = client.session[SESSION_KEY]["create"]
    other = Client()
    other.force_login(factories.create_user("other", Role.RESEARCHER))
    forged = {f"{role}_sha256": entry["sha256"] for role, entry in kept.items()}
    response = other.post(CREATE, DECLARATION | {"label": "response", **forged})
    assert response.status_code == 400 and not Submission.objects.exists()
    assert "This field is required." in _field(_text(response), "model")
    assert "Kept:" not in _text(response)


def test_a_refused_file_is_not_kept_and_a_choice_replaces_a_kept_one(
    client, researcher, example_files
):
    text = SimpleUploadedFile("model.txt", b"a model, honestly")
    response = client.post(
        CREATE, DECLARATION | {"label": "response"} | _files(example_files, model=text)
    )
    page = _text(response)
    assert response.status_code == 400
    assert "not a skops file" in _field(page, "model") and "Kept:" not in _field(page, "model")
    assert "Kept:" in _field(page, "train")
    assert not StoredFile.objects.filter(sha256=_sha256(b"a model, honestly")).exists()
    assert set(client.session[SESSION_KEY]["create"]) == {"train", "test"}

    model = example_files["model"]
    again = client.post(
        CREATE,
        DECLARATION | {"label": "response", "model": SimpleUploadedFile(model.name, model.data)},
    )
    assert again.status_code == 302
    stored = {f.role: f.stored_id for f in Submission.objects.get().files.all()}
    assert stored == {role: _sha256(u.data) for role, u in example_files.items()}


def test_a_kept_file_whose_bytes_are_gone_is_asked_for_again(
    client, researcher, example_files, settings
):
    client.post(CREATE, DECLARATION | {"label": "outcome"} | _files(example_files))
    for path in settings.TRE_AUDIT_FILE_ROOT.rglob("*"):
        if path.is_file():
            path.unlink()
    response = client.post(CREATE, DECLARATION | {"label": "response"})
    assert response.status_code == 400 and not Submission.objects.exists()
    assert "This field is required." in _field(_text(response), "model")


def test_a_new_version_keeps_its_files_across_an_error(client, example_files):
    people = factories.create_people()
    submission = factories.create_audited_submission(
        Status.CHANGES_REQUESTED, author=people["author"]
    )
    client.force_login(people["author"])
    url = reverse("submissions:new_version", args=[submission.pk])
    refused = client.post(url, _files(example_files))  # no note
    page = _text(refused)
    assert refused.status_code == 400
    assert "This field is required." in _field(page, "note")
    assert f"Kept: {example_files['train'].name}" in _field(page, "train")
    assert f'action="{url}#new-version-form"' in page
    assert client.post(url, {"note": "min_samples_leaf=20"}).status_code == 302
    submission.refresh_from_db()
    stored = {f.role: f.stored_id for f in submission.files.filter(version=2)}
    assert stored == {role: _sha256(u.data) for role, u in example_files.items()}


def test_a_new_version_without_the_label_lists_the_columns(client, example_files):
    people = factories.create_people()
    submission = factories.create_audited_submission(
        Status.CHANGES_REQUESTED, author=people["author"]
    )
    submission.label = "outcome"
    submission.save(update_fields=["label"])
    client.force_login(people["author"])
    url = reverse("submissions:new_version", args=[submission.pk])
    response = client.post(url, {"note": "v2"} | _files(example_files))
    assert response.status_code == 400
    assert "The label column 'outcome' is not in the training file; its columns are" in _text(
        response
    )


def test_withdrawing_needs_its_box_ticked(client):
    people = factories.create_people()
    submission = factories.create_audited_submission(
        Status.AWAITING_REVIEW, author=people["author"]
    )
    client.force_login(people["author"])
    url = reverse("submissions:withdraw", args=[submission.pk])
    response = client.post(url, {"reason": "Wrong data set"})
    page = _text(response)
    assert response.status_code == 400
    assert "Tick the box to confirm that you withdraw the request." in _field(
        page, "withdraw_confirm"
    )
    assert f'action="{url}#withdraw-form"' in page
    submission.refresh_from_db()
    assert submission.status == Status.AWAITING_REVIEW
    done = client.post(url, {"reason": "Wrong data set", "confirm": "on"}, follow=True)
    submission.refresh_from_db()
    assert submission.status == Status.WITHDRAWN
    assert done.redirect_chain[-1][0].endswith("#change")
    change = _text(done).split('<section id="change"', 1)[1]
    assert 'id="change-messages"' in change and "The request was withdrawn." in change


def test_the_header_reader_is_bounded_and_refuses_as_the_table_reader_does(tmp_path):
    import pandas as pd

    from attacks.exceptions import IntakeError
    from attacks.intake import columns_named

    frame = pd.DataFrame({"age": [40], "response": [1]})
    frame.to_parquet(tmp_path / "t.parquet")
    parquet = (tmp_path / "t.parquet").read_bytes()
    assert table_columns(parquet, filename="t.parquet") == ["age", "response"]
    assert table_columns(b"age,response\n40,1\n", filename="t.csv") == ["age", "response"]
    for data, refusal in [
        (b"\xff\xfeage\n", "not UTF-8"),
        (b"a,a\n1,2\n", "repeats the column name"),
        (b"", "empty"),
        (b"a\n1\n", None),
    ]:
        if refusal is None:
            assert table_columns(data, filename="t.csv") == ["a"]
            continue
        with pytest.raises(IntakeError, match=refusal):
            table_columns(data, filename="t.csv")
    with pytest.raises(IntakeError, match="larger"):
        table_columns(b"a,b\n1,2\n", filename="t.csv", max_bytes=4)
    named = columns_named([f"c{i}" for i in range(25)])
    assert named.startswith("'c0', 'c1'") and named.endswith("'c19' and 5 more")


def test_files_sent_for_someone_elses_request_are_not_stored(client, example_files):
    people = factories.create_people()
    submission = factories.create_audited_submission(
        Status.CHANGES_REQUESTED, author=people["author"]
    )
    client.force_login(people["checker"])  # sees the request, may not change it
    url = reverse("submissions:new_version", args=[submission.pk])
    before = StoredFile.objects.count()
    assert client.post(url, _files(example_files)).status_code == 400  # no note: form error
    assert StoredFile.objects.count() == before
    assert SESSION_KEY not in client.session


# A neural network: the optional declaration ------------------------------------------


def _network(mlp_files, **replaced):
    """The MLP's files as the form names them (the declaration is ``architecture``)."""
    named = {"architecture" if r == "declaration" else r: u for r, u in mlp_files.items()}
    return _files(named, **replaced)


def test_a_kept_declaration_goes_with_the_network_on_the_next_post(client, researcher, mlp_files):
    """About 3 s: the second post is checked by the sandboxed intake, model and declaration."""
    page = _text(client.post(CREATE, DECLARATION | {"label": "outcome"} | _network(mlp_files)))
    kept = _field(page, "architecture")
    assert "Kept: declaration.json" in kept and 'name="architecture-drop"' in kept
    assert '<span class="req"' not in kept  # optional, kept or not

    again = client.post(CREATE, DECLARATION | {"label": "label"})
    assert again.status_code == 302, _text(again)
    stored = {f.role: f.stored_id for f in Submission.objects.get().files.all()}
    assert stored["declaration"] == mlp_files["declaration"].sha256


def test_a_kept_declaration_can_be_dropped(client, researcher, mlp_files):
    client.post(CREATE, DECLARATION | {"label": "outcome"} | _network(mlp_files))
    response = client.post(CREATE, DECLARATION | {"label": "outcome", "architecture-drop": "1"})
    assert "Kept:" not in _field(_text(response), "architecture")
    assert set(client.session[SESSION_KEY]["create"]) == {"model", "train", "test"}


def test_a_declaration_that_does_not_read_is_refused_at_its_field(client, researcher, mlp_files):
    broken = SimpleUploadedFile("net.json", b'{"input_shape": [30],')
    response = client.post(
        CREATE, DECLARATION | {"label": "label"} | _network(mlp_files, architecture=broken)
    )
    page = _text(response)
    assert response.status_code == 400 and not Submission.objects.exists()
    assert "The declaration is not valid JSON" in _field(page, "architecture")
    assert "Kept: model.onnx" in _field(page, "model")
    assert not StoredFile.objects.filter(sha256=_sha256(broken.file.getvalue())).exists()


def test_the_form_links_to_the_declaration_format_which_lists_every_layer(client, researcher):
    from attacks.nn.schema import LAYERS

    form = _field(_text(client.get(CREATE)), "architecture")
    link = reverse("submissions:declaration_format")
    assert f'<a href="{link}">' in form and "(.skops or .onnx)" in _text(client.get(CREATE))
    page = _text(client.get(link))
    assert all(f"<code>{kind}</code>" in page for kind in LAYERS)
    assert '"optimizer": {"type": "adam", "lr": 0.01}' in page  # an example, as JSON

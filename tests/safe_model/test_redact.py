import pytest

from safe_model.redact import MAX_CHARS, exception_summary, redact

UNSEEN = "Found unknown categories ['PATIENT-Jane-Doe-1961-03-02'] in column 0 during transform"


def test_the_issues_unseen_category_keeps_its_meaning_without_the_value():
    assert redact(UNSEEN) == "Found unknown categories [<value>] in column 0 during transform"


def test_summary_names_the_exception_type():
    assert exception_summary(ValueError(UNSEEN)) == (
        "ValueError: Found unknown categories [<value>] in column 0 during transform"
    )
    assert exception_summary(MemoryError()) == "MemoryError"


@pytest.mark.parametrize(
    ("message", "secret"),
    [
        ("could not convert string to float: 'Jane Doe'", "Jane"),
        ('bad key "NHS 943 476 5919"', "5919"),
        ("y contains previously unseen labels: [45, 77]", "77"),
        ("value 1961-03-02 at 12:30:01", "1961"),
        ("income 52341.75 out of range", "52341"),
        ("weight 3.75e+10", "3.75"),
        ("record id 94347659 refused", "94347659"),
        ("row {'name': 'Ada', 'age': 36} refused", "Ada"),
        ("token PATIENT-Jane-Doe-x-y-z in the file", "Jane"),
        ("file /home/ada/cohort/patients.csv is gone", "patients"),
        ("b'\\x00secret' bytes", "secret"),
    ],
)
def test_values_are_removed(message, secret):
    assert secret not in redact(message)
    assert "<value>" in redact(message)


def test_what_went_wrong_is_kept():
    message = "X has 5 features, but LogisticRegression is expecting 3 features as input."
    assert redact(message) == message


def test_the_result_is_one_short_line():
    text = redact("first line\n" + "word " * 500)
    assert "\n" not in text
    assert len(text) <= MAX_CHARS and text.startswith("first line word")

import pytest

from gateway import topics
from gateway.errors import TopicError


def test_build_joins_validated_tokens():
    prefix = topics.prefix("debian", "production")
    built = topics.build(prefix, "dak", "package", "accept")
    assert built == "org.debian.production.dak.package.accept"
    wb = topics.build(prefix, "wanna-build", "build", "dep-wait")
    assert wb.endswith("wanna-build.build.dep-wait")
    assert topics.build(prefix, "git", "branch", "sub", "update").count(".") == 6


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("Dak", "lowercase"),
        ("a.b", "must not contain '.'"),
        ("-x", "must start with a letter or digit"),
        ("a_b", "may only contain"),
        ("", "empty"),
    ],
)
def test_bad_tokens_say_which_and_why(token, why):
    with pytest.raises(TopicError) as err:
        topics.build("org.debian.dev", "dak", token, "accept")
    assert "object" in str(err.value)
    assert why in str(err.value)


def test_env_must_be_allowed():
    with pytest.raises(TopicError, match="env token 'prod' is not one of dev, stg, production"):
        topics.prefix("debian", "prod")


def test_validate_full_topic():
    assert topics.validate("org.debian.dev.dak.package.accept")
    with pytest.raises(TopicError, match="tokens"):
        topics.validate("org.debian.dev.dak.accept")
    with pytest.raises(TopicError, match="start with 'org'"):
        topics.validate("com.debian.dev.dak.package.accept")
    with pytest.raises(TopicError, match="event token"):
        topics.validate("org.debian.dev.dak.package.Accept")


def test_topic_length_limit():
    long = "x" * 250
    with pytest.raises(TopicError, match="more than 255"):
        topics.build("org.debian.dev", "svc", long, "done")

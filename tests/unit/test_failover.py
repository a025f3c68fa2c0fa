"""FAXBOX_AMQP_URL naming one node or a cluster's several."""

from __future__ import annotations

import pytest

from faxbox.shared.failover import split_urls


def test_one_url_is_one_node() -> None:
    assert split_urls("amqp://u:p@mq:5672/v") == ("amqp://u:p@mq:5672/v",)


def test_a_cluster_is_listed_with_commas_in_order() -> None:
    assert split_urls(" amqp://a:5672/ , amqp://b:5672/,amqp://c:5672/ ,") == (
        "amqp://a:5672/",
        "amqp://b:5672/",
        "amqp://c:5672/",
    )


def test_no_node_at_all_is_refused() -> None:
    with pytest.raises(ValueError, match="names no node"):
        split_urls(" , ")

"""nginx-uwsgi-socket: the socket is shared through a group, never world-writable."""

import pytest

pytestmark = pytest.mark.stacks("nginx-uwsgi-socket")


def test_socket_is_group_only(stack):
    mode = stack.exec("app", "stat", "-c", "%a %U %G", "/run/uwsgi/uwsgi.sock").split()
    assert mode == ["660", "app", "app"], f"socket is {mode}, want 660 app app"
    folder = stack.exec("app", "stat", "-c", "%a", "/run/uwsgi").strip()
    assert folder == "750", f"/run/uwsgi is {folder}: others must not enter it"


def test_processes_are_not_root(stack):
    assert stack.exec("app", "id", "-u").strip() == "10001"
    nginx_ids = stack.exec("nginx", "id").strip()
    assert nginx_ids.startswith("uid=101"), nginx_ids
    assert "10001" in nginx_ids, f"nginx lacks the socket's group: {nginx_ids}"


def test_no_app_port_is_published(stack):
    assert [key for key in stack.published() if key[0] != "nginx"] == []

"""The chat site (examples/chat) in a real browser: headless Chromium, driven
by Selenium through Debian's chromedriver, against Daphne. Two pages on one
server (the in-memory layer), two pages on two servers sharing Redis, the
broadcast command reaching both, and the page listing who is connected.

Without Chromium they skip, naming what to install; under CI they fail:
these are the tests of what the project is for."""

import os
import shutil
import subprocess
import sys
import tempfile
import uuid

import pytest

from redis_server import Missing, RedisServer, free_port
from serve import HERE as CHAT
from serve import daphne

WAIT = 10


def chat_environment(redis_url=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
    env["DJANGO_SETTINGS_MODULE"] = "chatsite.settings"
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def chromium_tools():
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        raise Missing(
            "Chromium and ChromeDriver",
            "Debian: apt-get install chromium chromium-driver",
        )
    return browser, driver


@pytest.fixture(scope="module")
def browser():
    """Opens headless Chromium windows; each has its own profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = chromium_tools()
    opened = []

    def open_window():
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        # This machine's network is closed: no background calls home.
        for flag in (
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tempfile.mkdtemp(prefix='chat-browser-')}",
        ):
            options.add_argument(flag)
        window = webdriver.Chrome(options=options, service=Service(driver))
        opened.append(window)
        return window

    yield open_window
    for window in opened:
        window.quit()


@pytest.fixture(scope="module")
def pages(browser):
    return browser(), browser()


@pytest.fixture(scope="module")
def one_server():
    port = free_port()
    process = daphne(port, chat_environment(), stderr=subprocess.DEVNULL)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def redis():
    """The chat's own: its groups stay out of the other tests' Redis."""
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def two_servers(redis):
    processes, urls = [], []
    try:
        for _ in range(2):
            port = free_port()
            env = chat_environment(redis.url)
            processes.append(daphne(port, env, stderr=subprocess.DEVNULL))
            urls.append(f"http://127.0.0.1:{port}")
        yield urls
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)


def until(page, check, what):
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(page, WAIT).until(lambda _: check(), message=what)


def log_of(page):
    from selenium.webdriver.common.by import By

    return page.find_element(By.ID, "log").text


def enter_room(page, site, name, room):
    """Joins `room` as `name` through the front page's form."""
    from selenium.webdriver.common.by import By

    page.get(site + "/")
    page.find_element(By.ID, "name").send_keys(name)
    room_field = page.find_element(By.ID, "room")
    room_field.clear()
    room_field.send_keys(room)
    page.find_element(By.ID, "join").click()
    status = lambda: page.find_element(By.ID, "status").text  # noqa: E731
    until(page, lambda: status() == "connected", f"{name}'s page to connect")
    assert page.find_element(By.ID, "me").text == name


def say(page, text):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    page.find_element(By.ID, "text").send_keys(text + Keys.ENTER)


def sees(page, line):
    until(page, lambda: line in log_of(page).splitlines(), f"{line!r} on the page")


def a_room():
    return f"room-{uuid.uuid4().hex[:8]}"


def test_two_pages_on_one_server(pages, one_server):
    ada, bob = pages
    room = a_room()
    enter_room(ada, one_server, "ada", room)
    enter_room(bob, one_server, "bob", room)
    sees(ada, "bob joined")
    say(ada, "hello bob")
    sees(bob, "ada: hello bob")
    sees(ada, "ada: hello bob")
    say(bob, "hi ada")
    sees(ada, "bob: hi ada")


def test_two_pages_on_two_servers_sharing_redis(pages, two_servers):
    ada, bob = pages
    room = a_room()
    enter_room(ada, two_servers[0], "ada", room)
    enter_room(bob, two_servers[1], "bob", room)
    say(ada, "across servers")
    sees(bob, "ada: across servers")
    say(bob, "and back")
    sees(ada, "bob: and back")
    # Another room on the same servers hears none of it.
    enter_room(bob, two_servers[1], "bob", a_room())
    say(ada, "only in the first room")
    sees(ada, "ada: only in the first room")
    assert "only in the first room" not in log_of(bob)


def test_broadcast_command_reaches_pages_on_both_servers(pages, two_servers, redis):
    ada, bob = pages
    enter_room(ada, two_servers[0], "ada", a_room())
    enter_room(bob, two_servers[1], "bob", a_room())
    text = f"maintenance at noon {uuid.uuid4().hex[:6]}"
    done = subprocess.run(
        [sys.executable, "manage.py", "broadcast", text],
        cwd=CHAT,
        env=chat_environment(redis.url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    for page in (ada, bob):
        sees(page, f"📣 {text}")


def test_who_page_lists_users_on_every_server(pages, browser, two_servers):
    from selenium.webdriver.common.by import By

    ada, bob = pages
    room = a_room()
    enter_room(ada, two_servers[0], "ada", room)
    enter_room(bob, two_servers[1], "bob", room)
    watcher = browser()
    watcher.get(two_servers[0] + "/who/")

    def names():
        rows = watcher.find_elements(By.CSS_SELECTOR, "#people li")
        return sorted(row.text for row in rows if f" in {room} " in row.text)

    until(watcher, lambda: len(names()) == 2, "both users listed")
    assert [row.split(" in ")[0] for row in names()] == ["ada", "bob"]
    ada.get(two_servers[0] + "/")  # leaves the room
    until(watcher, lambda: [r.split(" in ")[0] for r in names()] == ["bob"], "ada gone")
    enter_room(ada, two_servers[1], "ada", room)
    until(watcher, lambda: len(names()) == 2, "ada back, on the other server")

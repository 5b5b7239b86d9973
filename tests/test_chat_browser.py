"""The chat site (examples/chat) in a real browser: headless Chromium, driven
by Selenium through Debian's chromedriver, against Daphne. Two pages on one
server (the in-memory layer), two pages on two servers sharing Redis, the
broadcast command reaching both, and the live page: who is connected on which
server process, the layer's stats() and the latency of recent messages.

Without Chromium they skip, naming what to install; under CI they fail:
these are the tests of what the project is for."""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass

import pytest

from redis_server import Missing, RedisServer, free_port
from serve import HERE as CHAT
from serve import daphne

WAIT = 10


@dataclass
class Site:
    """A Daphne serving the chat: where, and its process id (the live page
    names each user's server by it)."""

    url: str
    pid: int


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
    yield Site(f"http://127.0.0.1:{port}", process.pid)
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
    processes, sites = [], []
    try:
        for _ in range(2):
            port = free_port()
            env = chat_environment(redis.url)
            processes.append(daphne(port, env, stderr=subprocess.DEVNULL))
            sites.append(Site(f"http://127.0.0.1:{port}", processes[-1].pid))
        yield sites
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

    page.get(site.url + "/")
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


def open_live_page(browser, site, layer):
    """A live page on `site`, once it shows its server's figures."""
    from selenium.webdriver.common.by import By

    page = browser()
    page.get(site.url + "/live/")
    server = lambda: page.find_element(By.ID, "server").text  # noqa: E731
    until(
        page, lambda: server().endswith(f"pid {site.pid}, through {layer}"), "figures"
    )
    return page


def read_all(page, selector, script):
    """`script` (of an element `e`) for each match of `selector`, in one call.

    The live page redraws its lists while it runs, so elements found by one
    WebDriver call can be gone by the next; one script sees one state.
    """
    return page.execute_script(
        f"return Array.from(document.querySelectorAll(arguments[0]), e => {script})",
        selector,
    )


def people_in(page, room):
    """{name: (server, shown as on this page's server)} of `room`'s users."""
    people = {}
    rows = read_all(page, "#people li", "[e.innerText, e.className]")
    for text, classes in rows:
        name, _, rest = text.strip().partition(f" in {room} (")
        if rest:
            people[name] = (rest.rstrip(")"), "here" in classes.split())
    return people


def stat(page, name):
    cells = read_all(page, f'#stats tr[data-stat="{name}"] td', "e.textContent")
    return int(cells[1])


def latencies(page):
    """The chart's bars, in milliseconds."""
    titles = read_all(page, "#latency rect title", "e.textContent")
    return [float(title.split()[0]) for title in titles]


def test_live_page_on_one_server(pages, browser, one_server):
    from selenium.webdriver.common.by import By

    ada, bob = pages
    room = a_room()
    live = open_live_page(browser, one_server, "InMemoryChannelLayer")
    enter_room(ada, one_server, "ada", room)
    enter_room(bob, one_server, "bob", room)
    server = f"pid {one_server.pid}"
    until(live, lambda: len(people_in(live, room)) == 2, "both users listed")
    for where, here in people_in(live, room).values():
        assert where.endswith(server) and here
    bars = len(latencies(live))
    sent = stat(live, "group_sends")
    say(ada, "how fast?")
    sees(bob, "ada: how fast?")
    # ada's and bob's consumers each took delivery, in this process; the
    # chart keeps the last 40.
    expected = min(40, bars + 2)
    until(live, lambda: len(latencies(live)) == expected, "two more bars")
    assert all(0 <= ms < WAIT * 1000 for ms in latencies(live))
    summary = live.find_element(By.ID, "latency-summary").text
    assert re.fullmatch(rf"last {expected}: median [\d.]+ ms, max [\d.]+ ms", summary)
    assert stat(live, "group_sends") >= sent + 1
    assert stat(live, "channels") >= 3  # ada, bob, and the live page


def test_live_page_shows_each_users_server(pages, browser, two_servers):
    ada, bob = pages
    room = a_room()
    first, second = two_servers
    live = open_live_page(browser, second, "RedisChannelLayer")
    enter_room(ada, first, "ada", room)
    enter_room(bob, second, "bob", room)
    until(live, lambda: len(people_in(live, room)) == 2, "both users listed")
    assert people_in(live, room) == {
        "ada": (f"{socket.gethostname()} pid {first.pid}", False),
        "bob": (f"{socket.gethostname()} pid {second.pid}", True),
    }
    received = stat(live, "messages_received")
    bars = len(latencies(live))
    say(ada, "across servers")
    sees(bob, "ada: across servers")
    sees(ada, "ada: across servers")
    # bob's delivery happened on the live page's server, ada's did not.
    expected = min(40, bars + 1)
    until(live, lambda: len(latencies(live)) == expected, "one more bar")
    assert stat(live, "messages_received") > received
    ada.get(first.url + "/")  # leaves the room
    until(live, lambda: list(people_in(live, room)) == ["bob"], "ada gone")
    enter_room(ada, second, "ada", room)
    until(
        live,
        lambda: (
            people_in(live, room).get("ada")
            == (f"{socket.gethostname()} pid {second.pid}", True)
        ),
        "ada back, on the live page's server",
    )

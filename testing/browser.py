"""Headless Debian Chromium through Selenium (test-only requirements), to look at the
served page."""
import shutil
import tempfile

CHROMIUM_HINT = ('Chromium is not installed: the browser tests were left out (Debian/Ubuntu: '
                 'sudo apt-get install chromium chromium-driver)')


def chromium():
    """(chromium, chromedriver) executables, or None when either is missing."""
    browser = shutil.which('chromium') or shutil.which('chromium-browser')
    driver = shutil.which('chromedriver')
    return (browser, driver) if browser and driver else None


def chromium_driver(fake_camera=False, size=(1100, 1400)):
    """A Selenium driver of headless Debian Chromium with a fresh profile, quiet (no
    network of its own); fake_camera: a generated camera feed, allowed without asking.
    The profile folder goes when the driver quits (driver.profile_dir)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    browser, driver = chromium()
    profile = tempfile.mkdtemp(prefix='tsm-chromium-')
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
                 '--disable-background-networking', '--disable-component-update',
                 '--disable-sync', '--no-first-run', '--disable-quic',
                 '--disable-default-apps', '--disable-extensions',
                 f'--user-data-dir={profile}', f'--window-size={size[0]},{size[1]}'):
        opts.add_argument(flag)
    if fake_camera:
        opts.add_argument('--use-fake-ui-for-media-stream')
        opts.add_argument('--use-fake-device-for-media-stream')
    d = webdriver.Chrome(options=opts, service=Service(driver))
    d.profile_dir = profile
    quit_ = d.quit

    def quit_and_clean():
        try:
            quit_()
        finally:
            shutil.rmtree(profile, ignore_errors=True)
    d.quit = quit_and_clean
    return d

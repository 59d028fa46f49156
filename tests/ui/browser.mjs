// What the scripts of tests/ui share: Debian's headless Chromium (playwright-core downloads no browser),
// one page in it, the guard that keeps a page offline, and the JSON a script prints for
// tests/e2e/conftest.py's `driver` to parse. Each script keeps only what it checks.
import { chromium } from 'playwright-core'

// The script's arguments: `node <script> <args...>`.
export const args = process.argv.slice(2)

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]'])
// Inline and in-page resources never reach the network.
const LOCAL_SCHEMES = new Set(['data:', 'blob:', 'about:'])

/** Whether a request for `url` would leave the machine. */
export function offOrigin(url) {
  const u = new URL(url)
  return !LOCAL_SCHEMES.has(u.protocol) && !LOOPBACK.has(u.hostname)
}

// The machine has no network beyond loopback: background services would only fail.
const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync']
// Offline, no name but localhost resolves either, so a request the router misses fails instead of going out.
const NO_NAMES = '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1'

/**
 * Opens a page in headless Chromium ($CHROMIUM, else /usr/bin/chromium), runs `check(page)`, closes the
 * browser and prints `result` as one line of JSON. Options:
 * - viewport: the page's size (1280x900 unless given).
 * - offline: every request off the loopback host is aborted, and its URL added to result.blocked.
 * - failures: responses of status 400 or more, and loopback requests that failed, are added to result.failed.
 * The page's errors and whatever `check` throws are added to result.errors: the script then still exits 0,
 * its JSON saying what went wrong. Only a browser that does not start ends the script with an error.
 */
export async function withPage(result, { viewport = { width: 1280, height: 900 }, offline = false, failures = false },
  check) {
  if (offline) result.blocked ??= []
  if (failures) result.failed ??= []
  result.errors ??= []
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: offline ? [...FLAGS, NO_NAMES] : FLAGS,
  })
  try {
    const context = await browser.newContext({ viewport })
    if (offline) {
      // Recorded from the request events rather than the router: they also show requests it does not intercept.
      context.on('request', (r) => { if (offOrigin(r.url())) result.blocked.push(r.url()) })
      await context.route('**/*', (route) => (offOrigin(route.request().url()) ? route.abort('blockedbyclient') : route.continue()))
    }
    const page = await context.newPage()
    if (failures) {
      page.on('response', (r) => { if (r.status() >= 400) result.failed.push(`${r.status()} ${r.url()}`) })
      page.on('requestfailed', (r) => { if (!offOrigin(r.url())) result.failed.push(`${r.failure()?.errorText} ${r.url()}`) })
    }
    page.on('pageerror', (e) => result.errors.push(String(e)))
    await check(page)
  } catch (e) {
    result.errors.push(String(e))
  } finally {
    await browser.close()
  }
  console.log(JSON.stringify(result))
}

/** Saves what `page` shows to `path`, the whole page unless told `fullPage: false`; nothing without a path. */
export async function screenshot(page, path, { fullPage = true } = {}) {
  if (path) await page.screenshot({ path, fullPage })
}

// Signed in to Tally (the development issuer approves a browser on loopback at once) and on `path`:
// a page opened without it is sent through the same sign-in by its first answer, a 401.
export async function signIn (page, base, path = '/') {
  await page.goto(new URL(`/auth/login?next=${encodeURIComponent(path)}`, base).href)
}

// Opens the data-quality report (<base>/quality) and then its Great Expectations Data Docs in headless
// Chromium with every request off the loopback host aborted, and prints as JSON what rendered and what
// had to be blocked, for tests/e2e/test_quality_report.py. Usage: node quality.mjs <base url> [screenshot path]
import { chromium } from 'playwright-core'

const [base, screenshot] = process.argv.slice(2)
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]'])
const LOCAL_SCHEMES = new Set(['data:', 'blob:', 'about:'])

function offOrigin(url) {
  const u = new URL(url)
  return !LOCAL_SCHEMES.has(u.protocol) && !LOOPBACK.has(u.hostname)
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // As docs.mjs: no background services, and no name but localhost resolves.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync',
         '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1'],
})
const result = { report: {}, docs: {}, blocked: [], failed: [], errors: [] }
try {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } })
  context.on('request', (r) => { if (offOrigin(r.url())) result.blocked.push(r.url()) })
  await context.route('**/*', (route) => (offOrigin(route.request().url()) ? route.abort('blockedbyclient') : route.continue()))
  const page = await context.newPage()
  page.on('response', (r) => { if (r.status() >= 400) result.failed.push(`${r.status()} ${r.url()}`) })
  page.on('requestfailed', (r) => { if (!offOrigin(r.url())) result.failed.push(`${r.failure()?.errorText} ${r.url()}`) })
  page.on('pageerror', (e) => result.errors.push(String(e)))

  await page.goto(new URL('/quality', base).href)
  await page.waitForSelector('#status', { timeout: 15000 })
  result.report = await page.evaluate(() => ({
    url: location.pathname,
    title: document.title,
    status: document.querySelector('#status').textContent,
    charts: document.querySelectorAll('svg rect').length,
    sections: [...document.querySelectorAll('h2')].map((h) => h.textContent),
    mismatches: [...document.querySelectorAll('#mismatches tr')].map((r) => r.textContent),
    // The inline stylesheet took effect: the status badge is a coloured pill.
    styled: getComputedStyle(document.querySelector('#status')).borderRadius !== '0px',
  }))
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true })

  // The report's own link to the Data Docs, followed as a reader would.
  await page.click('footer a[href$="data_docs/index.html"]')
  // bootstrap-table (vendored jQuery and all) fills the validation results table in the browser.
  await page.waitForSelector('.bootstrap-table tbody tr', { timeout: 15000 })
  await page.evaluate(() => document.fonts.ready)
  result.docs = await page.evaluate(() => ({
    url: location.pathname,
    rows: document.querySelectorAll('#Validation-Results .bootstrap-table tbody tr').length,
    // Bootstrap's stylesheet: a .btn has rounded corners and padding.
    styled: getComputedStyle(document.querySelector('.btn')).borderRadius !== '0px',
    icons: document.fonts.check('900 16px "Font Awesome 6 Free"'),
  }))
} catch (e) {
  result.errors.push(String(e))
} finally {
  await browser.close()
}
console.log(JSON.stringify(result))

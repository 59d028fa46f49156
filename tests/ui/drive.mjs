// Opens Tally's UI in headless Chromium, exercises it like a user, saves a screenshot and prints
// what it saw as JSON for tests/e2e/test_ui.py to check.
import { chromium } from 'playwright-core'

const [url, eventType, screenshot] = process.argv.slice(2)
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // The machine has no network beyond loopback: background services would only fail.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
})
const result = { errors: [] }
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } })
  page.on('pageerror', (e) => result.errors.push(String(e)))
  await page.goto(url)
  await page.waitForSelector(`#types option[value="${eventType}"]`, { timeout: 30000 })
  await page.selectOption('#types', [eventType])
  await page.selectOption('#range', '15m')
  await page.selectOption('#group', 'source')
  // Grouped by source: wait for the redraw that has one series per source, not the first total.
  await page.waitForFunction(() => {
    const labels = [...document.querySelectorAll('.u-legend .u-series .u-label')].map((e) => e.textContent)
    return labels.length > 2 && !labels.includes('all')
  }, null, { timeout: 30000 })
  await page.waitForFunction((t) => {
    const rows = [...document.querySelectorAll('#events tbody tr')]
    return rows.length > 0 && rows.every((r) => r.children[1].textContent === t)
  }, eventType, { timeout: 30000 })
  result.legend = await page.$$eval('.u-legend .u-series .u-label', (els) => els.map((e) => e.textContent))
  result.rows = await page.$$eval('#events tbody tr', (rows) => rows.map((r) => [...r.children].map((c) => c.textContent)))
  result.next_enabled = !(await page.isDisabled('#next'))
  if (result.next_enabled) {
    await page.click('#next')
    await page.waitForFunction(() => document.querySelector('#evinfo').textContent.startsWith('page 2'), null, { timeout: 30000 })
    result.page2_first = await page.$eval('#events tbody tr td:last-child', (td) => td.textContent)
    await page.click('#prev')
  }
  await page.fill('#fsource', 'web')
  await page.click('#evfilters button[type=submit]')
  await page.waitForFunction(() => [...document.querySelectorAll('#events tbody tr')].every((r) => r.children[2].textContent === 'web'), null, { timeout: 30000 })
  result.web_rows = await page.$$eval('#events tbody tr', (rows) => rows.length)
  result.error_banner = await page.$eval('#error', (e) => (e.hidden ? '' : e.textContent))
  await page.screenshot({ path: screenshot, fullPage: true })
} catch (e) {
  result.errors.push(String(e))
} finally {
  await browser.close()
}
console.log(JSON.stringify(result))

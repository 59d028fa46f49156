// Opens Tally's UI in headless Chromium, exercises it like a user, saves a screenshot and prints
// what it saw as JSON for tests/e2e/test_ui.py to check. Usage: node drive.mjs <url> <event type> <screenshot path>
import { args, screenshot, withPage } from './browser.mjs'

const [url, eventType, screenshotPath] = args
const result = {}
await withPage(result, {}, async (page) => {
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
  // The table may hold an earlier answer (all shown types) for a while: wait for a full page of this
  // type (the test sends 120 events of it), drawn from answers the UI continues when the server's
  // scan budget cut them short.
  await page.waitForFunction((t) => {
    const rows = [...document.querySelectorAll('#events tbody tr')]
    return rows.length === 50 && rows.every((r) => r.children[1].textContent === t)
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
  // Signed in by the development issuer on the way (the first answer was a 401): the token is in a
  // cookie the page's scripts cannot read.
  result.cookies = (await page.context().cookies()).map((c) => ({ name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite }))
  result.script_sees = await page.evaluate(() => document.cookie)
  await screenshot(page, screenshotPath)
})

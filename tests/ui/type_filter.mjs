// Opens Tally's UI in headless Chromium and narrows the event-type picker by typing, as a user with
// thousands of types would, and prints as JSON which options stayed visible, which stayed chosen and
// which types the chart then asked for, for tests/e2e/test_ui.py to check.
// Usage: node type_filter.mjs <url> <prefix> <first type> <second type> [screenshot path]
import { args, screenshot, withPage } from './browser.mjs'

const [url, prefix, first, second, screenshotPath] = args
const result = {}

/** The picker as it stands: every option, those a user can see, those chosen. */
const picker = (page) => page.$eval('#types', (s) => ({
  all: [...s.options].map((o) => o.value),
  visible: [...s.options].filter((o) => getComputedStyle(o).display !== 'none').map((o) => o.value),
  selected: [...s.selectedOptions].map((o) => o.value),
  count: document.querySelector('#typecount')?.textContent ?? '',
}))

await withPage(result, {}, async (page) => {
  await page.goto(url)
  await page.waitForSelector(`#types option[value="${second}"]`, { state: 'attached', timeout: 30000 })
  // How a user finds it: by its label.
  result.filter_label = await page.getByLabel('filter', { exact: false }).first().getAttribute('id')
  await page.fill('#typefilter', prefix.toUpperCase()) // case does not matter
  result.by_prefix = await picker(page)
  await page.selectOption('#types', [first])
  // Narrowed to the second type only, the first is out of sight; choosing the second as a plain click
  // does (which drops every other choice in a list) must keep the first chosen.
  await page.fill('#typefilter', second)
  result.by_second = await picker(page)
  const asked = page.waitForRequest((r) => r.url().includes('/api/aggregate?') &&
    new URL(r.url()).searchParams.getAll('event_type').includes(second), { timeout: 10000 })
  await page.selectOption('#types', [second])
  result.after_second_chosen = await picker(page)
  result.chart_asked = new URL((await asked).url()).searchParams.getAll('event_type')
  await screenshot(page, screenshotPath, { fullPage: false })
  await page.fill('#typefilter', '')
  result.cleared = await picker(page)
  result.error_banner = await page.$eval('#error', (e) => (e.hidden ? '' : e.textContent))
})

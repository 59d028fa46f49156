// Opens the data-quality report (<base>/quality) and then its Great Expectations Data Docs in headless
// Chromium with every request off the loopback host aborted, and prints as JSON what rendered and what
// had to be blocked, for tests/e2e/test_quality_report.py. Usage: node quality.mjs <base url> [screenshot path]
import { args, screenshot, withPage } from './browser.mjs'

const [base, screenshotPath] = args
const result = { report: {}, docs: {} }
await withPage(result, { viewport: { width: 1100, height: 900 }, offline: true, failures: true }, async (page) => {
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
  await screenshot(page, screenshotPath)

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
})

// Opens the operations page (<base>/ops) in headless Chromium, offline, waits for two refreshes, and
// prints as JSON what each panel drew, the alerts shown and the navigation, for
// tests/e2e/test_operations.py. Usage: node ops.mjs <base url> [screenshot path]
import { args, screenshot, signIn, withPage } from './browser.mjs'

const [base, screenshotPath] = args
const result = { panels: [] }
await withPage(result, { viewport: { width: 1400, height: 1500 }, offline: true, failures: true }, async (page) => {
  await signIn(page, base)
  await page.click('header a[href="/ops/"]')
  await page.waitForFunction(() => Number(document.body.dataset.refreshed || 0) >= 2, null, { timeout: 30000 })
  result.url = new URL(page.url()).pathname
  result.title = await page.title()
  result.panels = await page.evaluate(() => [...document.querySelectorAll('.panel')].map((p) => ({
    id: p.id.replace('panel-', ''),
    kind: p.dataset.kind,
    title: p.querySelector('h3').textContent,
    series: Number(p.dataset.series || 0),
    points: Number(p.dataset.points || 0),
    canvas: p.querySelector('canvas') !== null,
    stat: [...p.querySelectorAll('.stat')].map((s) => s.textContent),
    empty: p.querySelector('.empty') !== null,
  })))
  result.alertCount = await page.textContent('#alertcount')
  result.error = await page.evaluate(() => (document.querySelector('#error').hidden ? '' : document.querySelector('#error').textContent))
  await screenshot(page, screenshotPath)
})

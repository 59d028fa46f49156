// Opens Dagster's global lineage page (<dagster url>/asset-groups) in headless Chromium with every
// request off the loopback host aborted, expands every group, and prints as JSON the asset names the
// graph drew and the requests it had to block, for tests/e2e/test_dagster_ui.py to check.
// Usage: node lineage.mjs <dagster url> [screenshot path]
import { chromium } from 'playwright-core'

const [base, screenshot] = process.argv.slice(2)
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]'])
const LOCAL_SCHEMES = new Set(['data:', 'blob:', 'about:'])
const offOrigin = (url) => { const u = new URL(url); return !LOCAL_SCHEMES.has(u.protocol) && !LOOPBACK.has(u.hostname) }

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync',
         '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1'],
})
const result = { groups: [], text: '', blocked: [], errors: [] }
try {
  const context = await browser.newContext({ viewport: { width: 2200, height: 1700 } })
  context.on('request', (r) => { if (offOrigin(r.url())) result.blocked.push(r.url()) })
  await context.route('**/*', (route) => (offOrigin(route.request().url()) ? route.abort('blockedbyclient') : route.continue()))
  const page = await context.newPage()
  page.on('pageerror', (e) => result.errors.push(String(e)))
  await page.goto(new URL('/asset-groups', base).href)
  await page.waitForSelector('text=Global asset lineage', { timeout: 60000 })
  await page.waitForTimeout(3000)
  // Groups start collapsed: open each with its unfold icon. Opening one zooms in on it; the page
  // remembers which groups are open, and a fresh load fits the whole graph in view.
  const unfold = page.locator('svg foreignObject [aria-label="unfold_more"]')
  for (let round = 0; round < 4 && (await unfold.count()); round++) {
    while (await unfold.count()) {
      await unfold.first().click()
      await page.waitForTimeout(1000)
    }
    await page.reload()
    await page.waitForSelector('svg foreignObject', { timeout: 60000 })
    await page.waitForTimeout(3000)
  }
  // Let the nodes' latest events and checks load before the picture is taken.
  await page.waitForFunction(() => !document.body.innerText.includes('Loading'), null, { timeout: 30000 }).catch(() => {})
  result.text = await page.evaluate(() => [...document.querySelectorAll('svg foreignObject')].map((f) => f.textContent).join('\n'))
  if (screenshot) await page.screenshot({ path: screenshot })
} catch (e) {
  result.errors.push(String(e))
} finally {
  await browser.close()
}
console.log(JSON.stringify(result))

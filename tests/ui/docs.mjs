// Opens the API reference (<base>/docs) in headless Chromium with every request off the loopback
// host aborted, and prints as JSON the operations it rendered and the requests it had to block, for
// tests/e2e/test_docs_offline.py to check. Usage: node docs.mjs <base url> [screenshot path]
import { chromium } from 'playwright-core'

const [base, screenshot] = process.argv.slice(2)
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]'])
// Inline and in-page resources never reach the network.
const LOCAL_SCHEMES = new Set(['data:', 'blob:', 'about:'])

function offOrigin(url) {
  const u = new URL(url)
  return !LOCAL_SCHEMES.has(u.protocol) && !LOOPBACK.has(u.hostname)
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // Same flags as drive.mjs (no background services, which would only fail without a network); and
  // no name but localhost resolves, so a request the router below misses fails instead of going out.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync',
         '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1'],
})
const result = { operations: [], blocked: [], failed: [], errors: [] }
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } })
  // Recorded from the request events rather than the router: they also show requests it does not intercept.
  context.on('request', (r) => { if (offOrigin(r.url())) result.blocked.push(r.url()) })
  await context.route('**/*', (route) => (offOrigin(route.request().url()) ? route.abort('blockedbyclient') : route.continue()))
  const page = await context.newPage()
  page.on('response', (r) => { if (r.status() >= 400) result.failed.push(`${r.status()} ${r.url()}`) })
  page.on('requestfailed', (r) => { if (!offOrigin(r.url())) result.failed.push(`${r.failure()?.errorText} ${r.url()}`) })
  page.on('pageerror', (e) => result.errors.push(String(e)))
  await page.goto(new URL('/docs', base).href)
  await page.waitForSelector('.swagger-ui .opblock', { timeout: 30000 })
  // Swagger UI breaks long paths with zero-width spaces; data-path holds the path as written.
  result.operations = await page.$$eval('.swagger-ui .opblock', (blocks) => blocks.map((b) => {
    const method = b.querySelector('.opblock-summary-method')?.textContent.trim()
    const path = b.querySelector('.opblock-summary-path')
    return `${method} ${path?.dataset.path ?? path?.textContent.replace(/\u200b/g, '').trim()}`
  }))
  // Unstyled, the page would still list the operations: check the vendored stylesheet took effect.
  result.styled = await page.$eval('.swagger-ui .opblock', (b) => getComputedStyle(b).borderRadius !== '0px')
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true })
} catch (e) {
  result.errors.push(String(e))
} finally {
  await browser.close()
}
console.log(JSON.stringify(result))

// A real browser through the whole dance: headless Chromium (Debian's) driven by playwright-core.
//
//   node e2e.mjs <gate URL> <screenshot folder>
//
// Opens a page of the app behind the gate, signs in on the IdP's page as alice, lands on the exact page asked for,
// reads the identity the app received, checks the session cookie's attributes as the browser stored them, signs
// out, and checks it is signed out. Prints one JSON line with what it saw; exits non-zero on any failure.
// COOKIE_NAME names the session cookie (default logto_gate); an https gate's throwaway certificate is accepted.
import { chromium } from 'playwright-core';

const [gate, shots] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const target = `${gate}/dashboard?tab=reports&x=1`;
const cookieName = process.env.COOKIE_NAME || 'logto_gate';

const browser = await chromium.launch({
  executablePath,
  headless: true,
  timeout: 60_000,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
  ],
});
const result = {};
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);

  await page.goto(target);
  // The gate sent us to the IdP (Logto's place): its sign-in page.
  await page.waitForSelector('#sign-in');
  result.signInPage = new URL(page.url()).pathname;
  if (shots) await page.screenshot({ path: `${shots}/1-sign-in.png` });
  await page.selectOption('select[name=account]', 'alice');
  await Promise.all([page.waitForURL(target), page.click('#sign-in')]);
  result.landedOn = page.url();
  result.greeting = (await page.textContent('#greeting')).trim();
  result.userHeader = (await page.locator('tr.id td', { hasText: /^x-forwarded-user$/ }).locator('xpath=following-sibling::td').textContent()).trim();
  if (shots) await page.screenshot({ path: `${shots}/2-app.png`, fullPage: true });

  const session = (await context.cookies(gate)).find((c) => c.name === cookieName);
  result.cookie = session
    ? { httpOnly: session.httpOnly, sameSite: session.sameSite, path: session.path, secure: session.secure }
    : null;
  // HttpOnly: page scripts cannot read the session.
  result.visibleToScript = await page.evaluate((name) => document.cookie.includes(name), cookieName);

  await page.click('#sign-out');
  // Logto's session ends too and the browser lands on the gate's signed-out page; signing in again from there
  // means Logto's sign-in page again.
  await page.waitForSelector('text=You are signed out');
  result.signedOutPage = new URL(page.url()).pathname;
  await page.click('text=Sign in again');
  await page.waitForSelector('#sign-in');
  result.afterSignOut = new URL(page.url()).pathname;
  result.cookieAfterSignOut = (await context.cookies(gate)).some((c) => c.name === cookieName);
  if (shots) await page.screenshot({ path: `${shots}/3-signed-out.png` });
  process.stdout.write(`${JSON.stringify(result)}\n`);
} catch (err) {
  process.stdout.write(`${JSON.stringify({ error: String(err && err.message), ...result })}\n`);
  process.exitCode = 1;
} finally {
  await browser.close();
}

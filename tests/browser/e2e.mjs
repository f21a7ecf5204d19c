// A real browser through the whole dance: headless Chromium (Debian's) driven by playwright-core.
//
//   node e2e.mjs <gate URL> <screenshot folder>
//
// Opens a page of the app behind the gate, signs in on the IdP's page as alice, lands on the exact page asked for,
// reads the identity the app received, checks the session cookie's attributes as the browser stored them, follows
// another site's link to the sign-out and confirms it, signs in again and signs out with the app's link, then opens a
// page holding a frame of the app and signs in from the frame. What the app left in the page's storage before the
// sign-out is read on the signed-out page. Prints one JSON line with what it saw; exits non-zero
// on any failure. The gate must let `/public` through without a session.
// COOKIE_NAME names the session cookie (default logto_gate); an https gate's throwaway certificate is accepted.
// FRAGMENT, when set, is the first page's fragment (`#` and FRAGMENT), which the sign-in must come back with
// (session.keep_url_fragment).
import { chromium } from 'playwright-core';

const [gate, shots] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const fragment = process.env.FRAGMENT ? `#${process.env.FRAGMENT}` : '';
const target = `${gate}/dashboard?tab=reports&x=1${fragment}`;
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

  // Another site's link to the sign-out (from a page of an opaque origin, so Sec-Fetch-Site: cross-site) signs
  // nobody out: the gate asks to confirm, and its button (a POST from the gate's origin) signs out, on to Logto.
  const away = `<a id="away" href="${gate}/_logto/sign-out">sign out</a>`;
  await page.goto(`data:text/html,${encodeURIComponent(away)}`);
  await Promise.all([page.waitForSelector('#confirm'), page.click('#away')]);
  result.crossSiteSignOut = new URL(page.url()).pathname;
  result.cookieWhileAsked = (await context.cookies(gate)).some((c) => c.name === cookieName);
  if (shots) await page.screenshot({ path: `${shots}/3-confirm-sign-out.png` });
  await page.click('#confirm');
  await page.waitForSelector('text=You are signed out');
  result.confirmedSignOutPage = new URL(page.url()).pathname;

  // Signing in again from there means Logto's sign-in page again.
  await page.click('text=Sign in again');
  await page.waitForSelector('#sign-in');
  result.afterSignOut = new URL(page.url()).pathname;
  result.cookieAfterSignOut = (await context.cookies(gate)).some((c) => c.name === cookieName);
  if (shots) await page.screenshot({ path: `${shots}/4-signed-out.png` });

  // The app's own sign-out link: Logto's session ends too and the browser lands on the gate's signed-out page.
  await page.selectOption('select[name=account]', 'alice');
  // What the app keeps in the browser stays after sign-out unless the gate asks the browser to clear it
  // (session.sign_out_clear_site_data): storageAfterSignOut says which.
  await Promise.all([page.waitForSelector('#sign-out'), page.click('#sign-in')]);
  await page.evaluate(() => localStorage.setItem('left', 'behind'));
  await page.click('#sign-out');
  await page.waitForSelector('text=You are signed out');
  result.signedOutPage = new URL(page.url()).pathname;
  result.storageAfterSignOut = await page.evaluate(() => localStorage.getItem('left'));

  // A page that holds a frame of the app, without a session: the frame cannot sign in where it is (Logto's sign-in
  // pages refuse to be framed by other origins), so it shows the gate's page, whose link signs in in the whole
  // window and comes back to the page holding the frame.
  await page.goto(`${gate}/public/embeds`);
  const frame = page.frameLocator('#embedded');
  await frame.locator('text=Your session has ended').waitFor();
  const again = frame.locator('a', { hasText: 'Sign in again' });
  result.frameLinkTarget = await again.getAttribute('target');
  if (shots) await page.screenshot({ path: `${shots}/5-frame-signed-out.png` });
  await Promise.all([page.waitForSelector('#sign-in'), again.click()]);
  result.frameSignInPage = new URL(page.url()).pathname;
  await page.selectOption('select[name=account]', 'alice');
  await Promise.all([page.waitForURL(`${gate}/public/embeds`), page.click('#sign-in')]);
  result.frameBackTo = page.url();
  result.frameGreeting = (await frame.locator('#greeting').textContent()).trim();
  if (shots) await page.screenshot({ path: `${shots}/6-frame-signed-in.png` });
  process.stdout.write(`${JSON.stringify(result)}\n`);
} catch (err) {
  process.stdout.write(`${JSON.stringify({ error: String(err && err.message), ...result })}\n`);
  process.exitCode = 1;
} finally {
  await browser.close();
}

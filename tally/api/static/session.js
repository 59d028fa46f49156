// Signing in. The API keeps the browser's token in an HttpOnly cookie (tally/api/routes/auth.py), out
// of reach of scripts; a 401 from any answer sends the browser to sign in and back to this page.
"use strict";

const SIGNIN_AT = "tally.signin_at";

// A 401 right after signing in means the cookie did not hold (cookies blocked, a clock far off):
// going round again would loop, so the error is shown instead.
function signIn() {
  const last = Number(sessionStorage.getItem(SIGNIN_AT) || 0);
  if (Date.now() - last < 15e3) throw new Error("signed in, but the API still refuses this browser (are cookies blocked?)");
  sessionStorage.setItem(SIGNIN_AT, String(Date.now()));
  location.assign("/auth/login?next=" + encodeURIComponent(location.pathname + location.search));
  throw new Error("signing in ...");
}

async function apiFetch(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  if (r.status === 401) signIn();
  return r;
}

// protect-accounts: a pre-reset listener, in JavaScript, that keeps automatic rotation away
// from accounts people must be able to rely on (break-glass, service accounts under change
// control). Its parameters are the protected login names; a scheduled or bulk reset of one of
// them is vetoed, a manual or API reset (a person asked for it) proceeds.
import { accountProperty } from 'lockstep:listener/props@0.1.0';
import { write } from 'lockstep:listener/log@0.1.0';

const AUTOMATIC = new Set(['scheduled', 'bulk']);

export function preReset(event) {
  let login;
  try {
    login = accountProperty('LOGINNAME');
  } catch (e) {
    const why = e && e.payload ? `${e.payload.tag}: ${e.payload.val}` : String(e);
    return { tag: 'veto', val: `cannot read LOGINNAME (${why})` };
  }
  if (login === undefined) {
    return { tag: 'veto', val: 'the account has no LOGINNAME' };
  }
  const isProtected = event.parameters.some((p) => p.toLowerCase() === login.toLowerCase());
  if (isProtected && AUTOMATIC.has(event.trigger)) {
    return { tag: 'veto', val: `${login} is protected from ${event.trigger} rotation; reset it by hand` };
  }
  write('info', `${login}: ${isProtected ? 'protected, but this reset was asked for by hand' : 'not protected'}`);
  return { tag: 'proceed' };
}

export function postReset(_event) {
  return { tag: 'success', val: '' };
}

// What the page shows and remembers, shared by its modules.

export const view = {
  name: null, // the session shown
  status: null, // its last status (GET /replay/sessions/{name}, or a control call's answer)
  statusSeq: 0, // bumped per status request and per status applied: a late answer loses
  doc: null, // the document shown
  docText: "",
  history: [], // documents pushed since the session was shown, newest first
  traces: [], // GET /replay/traces
  traceChosen: false, // the user picked a trace in the start form: stop following the session's
  nameEdited: false, // the user typed a session name: stop following the session shown
};

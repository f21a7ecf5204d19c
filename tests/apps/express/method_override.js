// An Express app's method override as its README writes it: method-override reading the
// `X-HTTP-Method-Override` field and, through a getter, a form's or a JSON body's `_method` (parsed by
// `express.urlencoded` and `express.json`, body-parser; multipart forms by multer, busboy), in front of a handler
// that answers the method it was given as JSON.
// Started by tests/support/frameworks.rs: node method_override.js PORT MAJOR (5: Express 5; 4: Express 4).
'use strict';

const port = Number(process.argv[2]);
const express = require(process.argv[3] === '4' ? 'express4' : 'express');
const methodOverride = require('method-override');
const multer = require('multer');

const app = express();
app.use(express.urlencoded({ extended: true }));
app.use(express.json());
app.use(multer({ storage: multer.memoryStorage() }).any());
app.use(methodOverride('X-HTTP-Method-Override'));
app.use(methodOverride((req) => {
  if (req.body && typeof req.body === 'object' && '_method' in req.body) {
    const method = req.body._method;
    delete req.body._method;
    return method;
  }
  return undefined;
}));
app.use((req, res) => res.json({ method: req.method }));
// A body the parsers refuse (400, 413, 415) ends here, as a failure the tests read as no method taken.
app.use((err, req, res, next) => res.status(err.status || 500).json({ error: String(err.type || err.message) }));
app.listen(port, '127.0.0.1');

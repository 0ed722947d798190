// An Express service on Node.js: an in-memory counter store.
const express = require('/usr/share/nodejs/express');
const app = express();
const counters = {};
app.get('/healthz', (req, res) => res.send('ok'));
app.post('/count/:name', (req, res) => { counters[req.params.name] = (counters[req.params.name] || 0) + 1; res.json(counters); });
app.get('/count/:name', (req, res) => res.json({ name: req.params.name, value: counters[req.params.name] || 0 }));
app.listen(3000, '0.0.0.0');

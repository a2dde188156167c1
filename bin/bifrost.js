#!/usr/bin/env node
'use strict'
const { main } = require('../dist/cli.js')

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code)
  },
  (error) => {
    console.error(error && error.code ? `error ${error.code}: ${error.message}` : error)
    process.exit(1)
  },
)

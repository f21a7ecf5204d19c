<?php
// A Laravel or Symfony app's method override as they run it: Symfony's HttpFoundation (Debian's
// php-symfony-http-foundation) with the `_method` parameter enabled, over PHP's own form and multipart parsers;
// answers the method the request is taken as, as JSON. Started by tests/support/frameworks.rs with `php -S`.
require '/usr/share/php/Symfony/Component/HttpFoundation/autoload.php';

use Symfony\Component\HttpFoundation\Request;

Request::enableHttpMethodParameterOverride();
$request = Request::createFromGlobals();
header('Content-Type: application/json');
echo json_encode(['method' => $request->getMethod()]);

// Umbrella header for libhepzoo: #include <hepzoo/hepzoo.hpp>
#pragma once

#include "hepzoo/card.hpp"
#include "hepzoo/error.hpp"
#include "hepzoo/session.hpp"
#include "hepzoo/sha256.hpp"
#include "hepzoo/tensor.hpp"

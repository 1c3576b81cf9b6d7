%% Per-call time of the hessiancore wrappers, per transport (MATLAB or GNU Octave)
% Times every wrapper on a small network (featureInput(3) -> fc(4) -> tanh -> fc(2), 16 observations,
% P = 26): the first call of each transport (for 'server' it starts the worker), then the median of
% numCalls further calls (2 for 'subprocess', which pays seconds per call, and only for three wrappers).
% Saves the results (a struct array) to outputFile (default matlabTransports.mat in the current folder)
% for benchmarks/bench_matlab.py, which writes benchmarks/matlab.md. In MATLAB add 'py' to transports
% when pyenv is set up. Needs the toolbox on the path and a configured Python (hessiancoreSetup).

if ~exist('transports', 'var')
    transports = {'server', 'subprocess'};
end
if ~exist('numCalls', 'var')
    numCalls = 10;
end
if ~exist('outputFile', 'var')
    outputFile = fullfile(pwd(), 'matlabTransports.mat');
end
rng(0);
net = dlnetwork([featureInputLayer(3), fullyConnectedLayer(4), tanhLayer, fullyConnectedLayer(2)]);
X = dlarray(randn(3, 16), 'CB');
T = dlarray(randn(2, 16), 'CB');
v = ones(26, 1);
calls = {'dlhessian', @(tr) dlhessian(net, X, T, 'Transport', tr)
         'dlhvp', @(tr) dlhvp(net, X, T, v, 'Transport', tr)
         'dlhessianDiag', @(tr) dlhessianDiag(net, X, T, 'Transport', tr)
         'dlhessianEigs', @(tr) dlhessianEigs(net, X, T, 3, 'Transport', tr)
         'dlhessianTrace', @(tr) dlhessianTrace(net, X, T, 'NumMatvecs', 30, 'Seed', 1, 'Transport', tr)
         'dlnewtonUpdate', @(tr) dlnewtonUpdate(net, X, T, 'Damping', 1e-2, 'Transport', tr)};
results = struct('Transport', {}, 'Wrapper', {}, 'First', {}, 'Median', {}, 'Min', {});
for t = 1:numel(transports)
    tr = transports{t};
    for c = 1:size(calls, 1)
        fcn = calls{c, 2};
        if strcmp(tr, 'subprocess') && ~any(strcmp(calls{c, 1}, {'dlhessian', 'dlhvp', 'dlhessianEigs'}))
            continue
        end
        start = tic();
        fcn(tr);
        first = toc(start);
        n = numCalls;
        if strcmp(tr, 'subprocess')
            n = min(numCalls, 2);  % seconds per call
        end
        times = zeros(n, 1);
        for k = 1:n
            start = tic();
            fcn(tr);
            times(k) = toc(start);
        end
        results(end + 1) = struct('Transport', tr, 'Wrapper', calls{c, 1}, 'First', first, ...
                                  'Median', median(times), 'Min', min(times)); %#ok<SAGROW>
        fprintf('%-10s %-15s first %7.3f s   median %7.3f s   min %7.3f s\n', tr, calls{c, 1}, first, ...
                median(times), min(times));
    end
end
save('-v7', outputFile, 'results');

%% Custom training loop with a sub-sampled Hessian per minibatch (MATLAB, Deep Learning Toolbox)
% Trains a classifier with dlfeval/dlgradient/adamupdate and, every few iterations, looks at the
% curvature of the loss on the current minibatch: the top Hessian eigenvalues (sharpness), the trace and
% the curvature along the gradient, sub-sampled on that minibatch; plus a less noisy estimate over the
% last few minibatches together (a cell array of minibatches: hessiancore weights each by its number of
% observations, as one big batch). With a minibatchqueue, pass the dlarray objects that next(mbq) returns
% in the same way.
%
% The curvature is that of the training loop's own modelLoss ('ModelLoss', @modelLoss): computed in
% MATLAB by automatic differentiation (dlgradient twice), without Python. modelLoss computes its gradients
% only when they are asked for (nargout > 1): dlgradient discards the derivative trace it used, and the
% Hessian needs that trace (for a loss by name instead: 'Loss', 'crossentropy', through Python).
% Runs in MATLAB and, with the test doubles of tests/octave on the path, in GNU Octave.

rng(0);
numClasses = 4;
numFeatures = 8;
numObservations = 2000;
labels = randi(numClasses, 1, numObservations);
features = randn(numFeatures, numObservations);
features(sub2ind(size(features), labels, 1:numObservations)) = ...
    features(sub2ind(size(features), labels, 1:numObservations)) + 1.5;
targets = zeros(numClasses, numObservations);
targets(sub2ind(size(targets), labels, 1:numObservations)) = 1;

net = dlnetwork([featureInputLayer(numFeatures), fullyConnectedLayer(32), reluLayer, ...
                 fullyConnectedLayer(numClasses), softmaxLayer]);

numEpochs = 3;
miniBatchSize = 128;
checkEvery = 10;
recentX = {};
recentT = {};
averageGrad = [];
averageSqGrad = [];
iteration = 0;
for epoch = 1:numEpochs
    order = randperm(numObservations);
    for first = 1:miniBatchSize:numObservations
        iteration = iteration + 1;
        idx = order(first:min(first + miniBatchSize - 1, numObservations));   % the last one is smaller
        X = dlarray(single(features(:, idx)), 'CB');
        T = dlarray(single(targets(:, idx)), 'CB');
        [loss, gradients] = dlfeval(@modelLoss, net, X, T);
        [net, averageGrad, averageSqGrad] = adamupdate(net, gradients, averageGrad, averageSqGrad, iteration);

        recentX = [recentX(max(1, end - 1):end), {X}];   % the last three minibatches
        recentT = [recentT(max(1, end - 1):end), {T}];
        if mod(iteration, checkEvery) == 0
            % Curvature of this minibatch's loss (matrix-free: P may be large).
            top = dlhessianEigs(net, X, T, 3, 'ModelLoss', @modelLoss);
            tr = dlhessianTrace(net, X, T, 'ModelLoss', @modelLoss, 'NumMatvecs', 60);
            % Curvature over the last minibatches together (globally normalized).
            topRecent = dlhessianEigs(net, recentX, recentT, 1, 'ModelLoss', @modelLoss);
            % Curvature along the gradient direction: g' * H * g / (g' * g).
            Hg = dlhvp(net, X, T, gradients, 'ModelLoss', @modelLoss);
            g = cellfun(@(v) extractdata(v(:)), gradients.Value, 'UniformOutput', false);
            hg = cellfun(@(v) extractdata(v(:)), Hg.Value, 'UniformOutput', false);
            g = double(gather(vertcat(g{:})));
            hg = vertcat(hg{:});
            fprintf(['iteration %4d  loss %.4f  lambda_max %.3e (last %d minibatches: %.3e)  trace %.3e  ', ...
                     'g''Hg/g''g %.3e\n'], iteration, extractdata(loss), top(1), numel(recentX), topRecent, tr, ...
                    (g' * hg) / (g' * g));
        end
    end
end

function [loss, gradients] = modelLoss(net, X, T)
    Y = forward(net, X);
    loss = crossentropy(Y, T);
    if nargout > 1
        gradients = dlgradient(loss, net.Learnables);
    end
end

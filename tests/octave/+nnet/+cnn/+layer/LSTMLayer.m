classdef LSTMLayer < nnet.cnn.layer.Layer
    % Test double of lstmLayer(numHiddenUnits, Name=Value)
    % (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.lstmlayer.html): NumHiddenUnits H
    % (a positive integer), OutputMode 'sequence' (default: 'CBT' out) or 'last' ('CB' out),
    % StateActivationFunction 'tanh' (default) or 'softsign', GateActivationFunction 'sigmoid' (default)
    % or 'hard-sigmoid', HasStateInputs and HasStateOutputs (default false), InputSize 'auto' until
    % initialized; learnables InputWeights 4H x InputSize, RecurrentWeights 4H x H, Bias 4H x 1
    % (gates input, forget, cell candidate, output); state HiddenState and CellState, H x 1 (zeros at initialization).
    % Takes 'CBT' input. predict: see predictLayer (differentiable once, as MATLAB documents).
    properties
        InputSize = 'auto'
        NumHiddenUnits = []
        OutputMode = 'sequence'
        StateActivationFunction = 'tanh'
        GateActivationFunction = 'sigmoid'
        HasStateInputs = false
        HasStateOutputs = false

        InputWeights = []
        RecurrentWeights = []
        Bias = []
        HiddenState = []
        CellState = []
    end
    properties (Constant)
        DefaultName = 'lstm'
    end
    methods

        function layer = set.NumHiddenUnits(layer, value)
            layer.NumHiddenUnits = hcTestCheck(value, 'posint', 'NumHiddenUnits');
        end

        function layer = set.InputSize(layer, value)
            layer.InputSize = hcTestCheck(value, 'auto-or-posint', 'InputSize');
        end

        function layer = set.OutputMode(layer, value)
            layer.OutputMode = hcTestCheck(value, 'member', 'OutputMode', {'sequence', 'last'});
        end

        function layer = set.StateActivationFunction(layer, value)
            layer.StateActivationFunction = hcTestCheck(value, 'member', 'StateActivationFunction', ...
                                                        {'tanh', 'softsign'});
        end

        function layer = set.GateActivationFunction(layer, value)
            layer.GateActivationFunction = hcTestCheck(value, 'member', 'GateActivationFunction', ...
                                                       {'sigmoid', 'hard-sigmoid'});
        end

        function layer = set.HasStateInputs(layer, value)
            layer.HasStateInputs = hcTestCheck(value, 'logical', 'HasStateInputs');
        end

        function layer = set.HasStateOutputs(layer, value)
            layer.HasStateOutputs = hcTestCheck(value, 'logical', 'HasStateOutputs');
        end

        function names = learnableNames(~)
            names = {'InputWeights', 'RecurrentWeights', 'Bias'};
        end

        function names = stateNames(~)
            names = {'HiddenState', 'CellState'};
        end

        function shapes = parameterShapes(layer, inSizes, inFmts)
            if ~strcmp(inFmts{1}, 'CBT')
                error('hessiancoreTest:format', 'layer ''%s'': lstmLayer takes ''CBT'' input here, got ''%s''', ...
                      layer.Name, inFmts{1});
            end
            H = layer.NumHiddenUnits;
            rows = 4 * H;
            shapes = {[rows, inSizes{1}], [rows, H], [rows, 1], [H, 1], [H, 1]};
        end

        function value = initialValue(layer, name, shape, inSizes)
            H = layer.NumHiddenUnits;
            switch name
                case {'InputWeights', 'RecurrentWeights'}
                    % MATLAB: Glorot and orthogonal; any random values serve the tests.
                    value = nnet.cnn.layer.Layer.glorot(shape, shape(2), shape(1));
                case 'Bias'
                    value = zeros(shape, 'single');
                    value(H + 1:2 * H) = 1;  % 'unit-forget-gate'
                otherwise
                    value = initialValue@nnet.cnn.layer.Layer(layer, name, shape, inSizes);
            end
        end

        function [sz, fmt] = outputSize(layer, ~, ~)
            sz = layer.NumHiddenUnits;
            fmt = 'CBT';
            if strcmp(layer.OutputMode, 'last')
                fmt = 'CB';
            end
        end

        function Y = predictLayer(layer, X, p)
            % The lstmLayer page's recurrence (gates input, forget, cell candidate, output):
            % z = W x_t + R h + b; c = f .* c + i .* g; h = o .* tanh(c), from zero initial states (the
            % double's HiddenState and CellState), with the default activations (tanh, sigmoid) only.
            % Differentiable once: MATLAB documents no higher-order derivatives through lstm.
            checkActivations(layer);
            H = layer.NumHiddenUnits;
            xs = stripdims(X);
            B = size(xs, 2);
            T = size(xs, 3);
            h = zeros(H, B);
            c = zeros(H, B);
            steps = cell(1, T);
            for t = 1:T
                z = p.InputWeights * xs(:, :, t) + p.RecurrentWeights * h + p.Bias;
                gi = sigmoid(z(1:H, :));
                gf = sigmoid(z(H + 1:2 * H, :));
                gg = tanh(z(2 * H + 1:3 * H, :));
                go = sigmoid(z(3 * H + 1:4 * H, :));
                c = gf .* c + gi .* gg;
                h = go .* tanh(c);
                steps{t} = h;
            end
            Y = recurrentOutput(layer, steps, 'lstm');
        end

        function Y = recurrentOutput(layer, steps, fname)
            % The hidden states of every time step as H x B x T 'CBT' ('sequence') or the last as 'CB',
            % marked: MATLAB documents no higher-order derivatives through FNAME (Answers 587696).
            if strcmp(layer.OutputMode, 'last')
                Y = dlarray(steps{end}, 'CB');
            else
                T = numel(steps);
                Y = 0;
                for t = 1:T
                    E = zeros(1, 1, T);
                    E(t) = 1;
                    Y = Y + reshape(steps{t}, size(steps{t}, 1), size(steps{t}, 2), 1) .* E;
                end
                Y = dlarray(Y, 'CBT');
            end
            Y = dlarray.noHigherDerivatives(Y, fname);
        end

        function checkActivations(layer)
            if ~strcmp(layer.StateActivationFunction, 'tanh') || ~strcmp(layer.GateActivationFunction, 'sigmoid')
                error('hessiancoreTest:notImplemented', ['layer ''%s'': only the default activations (tanh, ', ...
                                                         'sigmoid) are in the double''s predict'], layer.Name);
            end
        end

    end
end
